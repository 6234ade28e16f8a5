"""The pipeline's model stage, as plain functions: cut a gathered batch to a size the
model runs without padding, and run one model call over it."""

from __future__ import annotations

import logging
import time

import numpy as np

from labelsd.pipeline.reader import Item, Known, classified_outcome
from labelsd.records import Outcome

log = logging.getLogger(__name__)


def fit_ladder(items: list[Item], wanted: int,
               ladder: tuple[int, ...] | None) -> tuple[list[Item], list[Item]]:
    """(run now, carry to the next batch): the largest padded size that is full
    (6 ready -> 4 now, 2 carried) instead of padding 6 to 8, since a padded row costs
    a full forward row and labels nothing. Items with a final outcome always go now."""
    if not ladder or wanted in ladder:
        return items, []
    fits = max(size for size in ladder if size <= wanted)
    keep, carry, taken = [], [], 0
    for item in items:
        if item.final is None:
            if taken >= fits:
                carry.append(item)
                continue
            taken += 1
        keep.append(item)
    return keep, carry


def classify_batch(classifier, items: list[Item],
                   timeline=None) -> tuple[list[Outcome], dict[str, Known], int]:
    """One model call for the batch; the same bytes twice go through it once.
    Returns every outcome (followers included), what the model said per content,
    and how many rows went through the model."""
    unique: dict[str, Item] = {}
    for item in items:
        if item.final is None and item.sha256 not in unique:
            unique[item.sha256] = item
    known: dict[str, Known] = {}
    rows = 0
    if unique:
        leaders = list(unique.values())
        start = time.monotonic()
        try:
            top3 = classifier.top3(np.stack([i.pixels for i in leaders]))
        except Exception as err:  # noqa: BLE001 - e.g. out of memory: try again later
            log.exception("model failed on a batch of %d", len(leaders))
            for item in items:
                if item.final is None:
                    item.final = Outcome(item.claim, "retry", error=f"model failed: {err}")
                    for f in item.followers:
                        f.final = Outcome(f.claim, "retry", error=f"model failed: {err}")
            top3 = []
        if timeline is not None:
            timeline.add("forward", start, len(leaders))
        rows = len(top3)
        for leader, preds in zip(leaders, top3):
            known[leader.sha256] = Known(preds, leader.width, leader.height, leader.format)
    outcomes = []
    for item in items:
        for one in (item, *item.followers):
            if one.final is None:
                one.final = classified_outcome(one, known[item.sha256], classifier.name)
            outcomes.append(one.final)
        item.pixels = None
    return outcomes, known, rows


__all__ = ["classify_batch", "fit_ladder"]
