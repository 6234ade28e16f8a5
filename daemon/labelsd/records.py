"""Plain records that cross module boundaries: what a stat() says of a file, a
claimed queue row and what became of it, what the model predicts, and what the
CLI renders. Kept free of SQLAlchemy and TensorFlow so anything can import them
(the watcher and the pipeline use them without touching SQL)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

STATUSES = ("pending", "done", "failed", "missing")


class OutcomeKind(str, Enum):
    """What became of one claimed path. A str enum, so it logs and compares as its value."""

    CLASSIFIED = "classified"  # the model ran
    LINKED = "linked"          # content already known: no decode, no model
    BAD_IMAGE = "bad_image"    # read, but cannot be decoded (the content fails)
    RETRY = "retry"            # transient error: try again later
    VANISHED = "vanished"      # the file went away before it was read
    # A backfill claim's (Claim.embed_only: no queue row behind it, only a vector to add)
    EMBEDDED = "embedded"          # the model ran for its vector; the labels stay as they were
    NOT_EMBEDDED = "not_embedded"  # its file could not be read or decoded, or holds other bytes now


class Tally(str, Enum):
    """The pipeline counter a committed outcome adds to (pipeline.writer.log_outcome
    says which): the names the heartbeat, the status line and `labels scan` report.
    Not one per kind: a retry out of attempts counts as failed."""

    DONE = "done"
    LINKED = "linked"
    FAILED = "failed"
    VANISHED = "vanished"
    RETRIED = "retried"
    EMBEDDED = "embedded"
    NOT_EMBEDDED = "not_embedded"


@dataclass(frozen=True)
class FileFacts:
    """What a stat() says about a file; enough to tell 'unchanged' without reading it."""

    path: str
    size: int | None = None
    mtime_ns: int | None = None


@dataclass(frozen=True)
class Claim:
    """A queue row taken by this node, or (`embed_only` set) a backfill claim: a
    content already labelled whose vector is missing, read through `path`, with no
    queue row behind it (pipeline/backfill.py; its id is negative)."""

    id: int
    path: str
    enqueued_at: datetime
    attempts: int
    embed_only: str | None = None  # the SHA-256 the file must still have


@dataclass
class Outcome:
    """What happened to one claimed path (see `OutcomeKind`)."""

    claim: Claim
    kind: OutcomeKind
    sha256: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    error: str | None = None
    model: str | None = None
    predictions: list[Prediction] = field(default_factory=list)
    meta: PhotoMeta | None = None  # what the photo says of itself (EXIF, keywords); new contents only
    embedding: bytes | None = None  # the content's vector (labelsd.vectors.codec), by `model`


@dataclass(frozen=True)
class PhotoMeta:
    """What a photo carries: when and where it was taken, with what, and the
    keywords other programs gave it (embedded XMP dc:subject, IPTC, its sidecar)."""

    taken_at: str | None = None  # camera's local time, ISO 8601 without offset: 2024-07-14T15:30:00
    camera: str | None = None  # make and model: "Apple iPhone 13"
    gps_lat: float | None = None  # degrees, north positive
    gps_lon: float | None = None  # degrees, east positive
    keywords: tuple[str, ...] = ()
    # Keywords its sidecar says a person took away (xmp/suppression.py): a label among
    # them is stored as a rejection of that label, from the sidecar.
    suppressed: tuple[str, ...] = ()

    def gps(self) -> dict | None:
        return gps_dict(self.gps_lat, self.gps_lon)


def gps_dict(lat: float | None, lon: float | None) -> dict | None:
    return None if lat is None or lon is None else {"lat": lat, "lon": lon}


@dataclass(frozen=True)
class Prediction:
    rank: int
    label: str
    wnid: str
    class_index: int
    score: float
    confirmed: bool = False  # the person said it is right (store/judgements.py)

    def to_dict(self) -> dict:
        # Spelled out: dataclasses.asdict deep-copies and was most of `search --json`'s time.
        return {"rank": self.rank, "label": self.label, "wnid": self.wnid,
                "class_index": self.class_index, "score": self.score,
                "confirmed": self.confirmed}


@dataclass(frozen=True)
class RejectedLabel:
    """A label the person took back on a content: no reader shows or finds it."""

    label: str
    wnid: str
    class_index: int
    source: str  # where it was rejected: cli, xmp (a sidecar), web
    rejected_at: str  # ISO 8601, UTC

    def to_dict(self) -> dict:
        return {"label": self.label, "wnid": self.wnid, "class_index": self.class_index,
                "source": self.source, "rejected_at": self.rejected_at}


@dataclass
class ImageRecord:
    """One tracked path and what is known of its content (the JSON contract in docs/contract.md)."""

    path: str
    sha256: str | None
    status: str
    error: str | None = None
    width: int | None = None
    height: int | None = None
    labels: list[Prediction] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    classified_at: datetime | None = None
    taken_at: str | None = None
    camera: str | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None
    model: str | None = None  # which model produced `labels` ("EfficientNetLite0/imagenet")
    rejected: list[RejectedLabel] = field(default_factory=list)  # left out of `labels`

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "status": self.status,
            "error": self.error,
            "width": self.width,
            "height": self.height,
            "labels": [p.to_dict() for p in self.labels],
            "tags": list(self.tags),
            "classified_at": self.classified_at.isoformat() if self.classified_at else None,
            "taken_at": self.taken_at,
            "camera": self.camera,
            "gps": gps_dict(self.gps_lat, self.gps_lon),
            "model": self.model,
            "rejected": [r.to_dict() for r in self.rejected],
        }

    @classmethod
    def from_dict(cls, d: dict) -> ImageRecord:
        """The record whose `to_dict()` is `d` (store/recordsql.py builds records in
        that shape, which is what `--json` prints)."""
        gps, when = d["gps"], d["classified_at"]
        return cls(path=d["path"], sha256=d["sha256"], status=d["status"], error=d["error"],
                   width=d["width"], height=d["height"],
                   labels=[Prediction(**p) for p in d["labels"]], tags=list(d["tags"]),
                   classified_at=datetime.fromisoformat(when) if when else None,
                   taken_at=d["taken_at"], camera=d["camera"],
                   gps_lat=gps["lat"] if gps else None, gps_lon=gps["lon"] if gps else None,
                   model=d["model"], rejected=[RejectedLabel(**r) for r in d["rejected"]])
