"""What a claim becomes on its way through the pipeline (`Item`), what the model said
of a content (`Known`), a backfill's claim that gave no vector (`not_embedded`), and
the outcome the model's answer makes (`classified_outcome`). A file that could not
be read, or fails outright, is reading.py's."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from labelsd.records import Claim, Outcome, OutcomeKind, PhotoMeta, Prediction


@dataclass
class Item:
    """One claimed path on its way through the pipeline."""

    claim: Claim
    sha256: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    data: bytes | None = None
    pixels: np.ndarray | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    meta: PhotoMeta | None = None  # date, camera, GPS, keywords (read with the pixels)
    final: Outcome | None = None  # set when no model call is needed
    followers: list[Item] = field(default_factory=list)  # same bytes, other paths
    taken: bool = False  # the batcher has it; no more followers may join


@dataclass(frozen=True)
class Known:
    """What the model said about one content, kept to answer copies of it."""

    predictions: list[Prediction]
    width: int | None
    height: int | None
    format: str | None
    embedding: bytes | None = None  # its vector (labelsd.vectors.codec)


def classified_outcome(item: Item, known: Known, model: str) -> Outcome:
    """What the model said, as the outcome of `item`: its labels and vector, or, for a
    backfill's claim (its content labelled before), the vector only."""
    if item.claim.embed_only is not None:
        if known.embedding is None:  # a runtime that gave none: nothing to store, and said so
            return Outcome(item.claim, OutcomeKind.NOT_EMBEDDED, sha256=item.sha256,
                           error="the model gave no vector")
        return Outcome(item.claim, OutcomeKind.EMBEDDED, sha256=item.sha256, model=model,
                       embedding=known.embedding)
    return Outcome(item.claim, OutcomeKind.CLASSIFIED, sha256=item.sha256, size=item.size,
                   mtime_ns=item.mtime_ns, width=known.width, height=known.height,
                   format=known.format, model=model, predictions=list(known.predictions),
                   meta=item.meta, embedding=known.embedding)


def not_embedded(item: Item) -> Outcome:
    """A backfill's claim that gave no vector, and why (its final outcome said)."""
    why = item.final.error if item.final is not None and item.final.error else item.final.kind.value
    return Outcome(item.claim, OutcomeKind.NOT_EMBEDDED, sha256=item.sha256, error=why)


__all__ = ["Item", "Known", "classified_outcome", "not_embedded"]
