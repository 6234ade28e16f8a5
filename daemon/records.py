"""Plain records that cross module boundaries: what the model predicts and what
the CLI renders. Kept free of SQLAlchemy and TensorFlow so anything can import them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

STATUSES = ("pending", "done", "failed", "missing")


@dataclass(frozen=True)
class Prediction:
    rank: int
    label: str
    wnid: str
    class_index: int
    score: float

    def to_dict(self) -> dict:
        # Spelled out: dataclasses.asdict deep-copies and was most of `search --json`'s time.
        return {"rank": self.rank, "label": self.label, "wnid": self.wnid,
                "class_index": self.class_index, "score": self.score}


@dataclass
class ImageRecord:
    """One tracked path and what is known of its content (the JSON contract in DESIGN.md)."""

    path: str
    sha256: str | None
    status: str
    error: str | None = None
    width: int | None = None
    height: int | None = None
    labels: list[Prediction] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    classified_at: datetime | None = None

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
        }
