"""The backfill: contents labelled before they had a vector (a library older than
embeddings, or labelled by another model), embedded at last, when the queue is empty.

The claimer asks it for work only when `workqueue.claim` found none, so a new photo
always goes first: it waits at most for the batch in flight. `take` walks the
labelled contents in key order from a cursor (store.embeddings.contents_to_embed),
and hands each that lacks a vector of the running model to the pipeline as a
claim of its own (`Claim.embed_only`: a negative id, no queue row), read through
one of its present paths. The pipeline reads, hashes and decodes it as any photo,
and the model's vector (not its labels: those stay as they are) is stored by the
writer in its one transaction per batch.

Nothing about the backfill is kept but the vectors themselves: after a restart the
walk starts again and finds only what is still missing, so nothing is embedded
twice and nothing is lost (kill -9 included). A content whose files are all gone,
or unreadable, is passed over until the next walk: one per start of the service,
and one every REWALK_S after a walk ends.
"""

from __future__ import annotations

import itertools
import logging
import time
from datetime import datetime, timezone

from labelsd.records import Claim
from labelsd.store import embeddings
from labelsd.store.engine import Store

log = logging.getLogger(__name__)

REWALK_S = 3600.0
MAX_STEPS = 20  # queries one `take` may run past contents with no file before it yields


class Backfill:
    """The walk over contents that lack a vector of `model` (under the folder `under`
    only, for `labels scan`). Used from the claimer thread only."""

    def __init__(self, store: Store, model: str, under: str | None = None):
        self.store = store
        self.model = model
        self.under = under
        self.cursor = ""
        self.finished = False
        self.handed = 0  # claims handed out in this walk
        self.without_file = 0  # contents passed over: no present file to read them from
        self._ids = itertools.count(-1, -1)
        self._finished_at = 0.0

    def take(self, limit: int) -> list[Claim]:
        """Up to `limit` claims of contents to embed; [] when this walk is over."""
        if self.finished:
            if time.monotonic() - self._finished_at < REWALK_S:
                return []
            self.cursor, self.finished, self.handed, self.without_file = "", False, 0, 0
        claims: list[Claim] = []
        taken: set[str] = set()
        now = datetime.now(timezone.utc)
        for _ in range(MAX_STEPS):
            rows = embeddings.contents_to_embed(self.store, self.model, self.cursor, limit, self.under)
            for sha, path, _ in rows:
                if path is None:
                    self.without_file += 1
                elif sha not in taken:  # two paths of one content under a scanned folder
                    taken.add(sha)
                    claims.append(Claim(next(self._ids), path, now, 0, embed_only=sha))
            if rows:
                self.cursor = rows[-1][2]
            if len(rows) < limit:
                self._finish()
                break
            if claims:
                break
        self.handed += len(claims)
        return claims

    def _finish(self) -> None:
        self.finished = True
        self._finished_at = time.monotonic()
        if self.handed or self.without_file:
            log.info("embedding backfill walked every content: %d handed to the model, %d without "
                     "a file to read%s", self.handed, self.without_file,
                     f" under {self.under}" if self.under else "")


__all__ = ["REWALK_S", "Backfill"]
