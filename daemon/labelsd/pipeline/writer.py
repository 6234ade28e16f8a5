"""The pipeline's write stage: a batch of outcomes in transactions of at most
ROWS_PER_TRANSACTION rows, each retried while the database does not answer,
and one log line per image.

Two kinds of failure, told apart by store/faults.py: an outage (locked, full,
unreachable: StoreUnavailable) is waited out with the one back-off and the
whole batch kept; a statement no retry can cure (StoreRejected, or a value the
driver cannot even send: an integer past 64 bits) means some photo of the
transaction brought a bad row. Its photos are then written one at a time: the
one at fault fails with the reason, the others are written."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence

from labelsd.backoff import Stopped, retry_unavailable
from labelsd.errors import StoreRejected
from labelsd.paths import shown
from labelsd.pipeline.reading import failed_outright
from labelsd.records import Outcome, OutcomeKind, Tally
from labelsd.store import contents, workqueue
from labelsd.store.engine import Store

log = logging.getLogger(__name__)

# The most rows one transaction writes (a content, its predictions, a path, a queue
# row, its imported keywords: under 10 for most photos, 262 at the keyword cap), so
# that no batch holds the database's write lock for long whatever its tags; a photo
# with more rows than this is written alone.
ROWS_PER_TRANSACTION = 1000


def commit_outcomes(store: Store, node_id: str, outcomes: Sequence[Outcome],
                    abandon: threading.Event) -> list[Outcome]:
    """Write `outcomes`; return them as written (a photo whose rows the database
    refused for good replaced by its failure). An outage is retried with back-off
    (outcomes are never dropped while the pipeline runs) until `abandon` is set
    (stop() ran out of time): then what was written so far is returned, and the
    rest is left to stop(), which hands its claims back."""
    written: list[Outcome] = []
    try:
        for part in _parts(outcomes):
            _commit(store, node_id, part, abandon, written)
    except Stopped:
        log.info("stopped while writing: %d of %d outcome(s) written", len(written), len(outcomes))
    return written


def _parts(outcomes: Sequence[Outcome]) -> Iterator[list[Outcome]]:
    part: list[Outcome] = []
    rows = 0
    for o in outcomes:
        n = _rows(o)
        if part and rows + n > ROWS_PER_TRANSACTION:
            yield part
            part, rows = [], 0
        part.append(o)
        rows += n
    if part:
        yield part


def _rows(o: Outcome) -> int:
    return 3 + len(o.predictions or ()) + (len(o.meta.keywords) if o.meta is not None else 0)


def _commit(store: Store, node_id: str, outcomes: list[Outcome], abandon: threading.Event,
            written: list[Outcome]) -> None:
    try:
        retry_unavailable(lambda: contents.record_outcomes(store, node_id, outcomes), abandon,
                          f"writing {len(outcomes)} outcome(s)")
    except Stopped:
        raise
    except Exception as err:  # noqa: BLE001 - refused for good: find the photo at fault
        if len(outcomes) == 1:
            written.append(_fail(store, node_id, outcomes[0], err, abandon))
            return
        log.warning("writing %d outcome(s): %s; writing them one at a time to find the photo "
                    "at fault", len(outcomes), _reason(err))
        for o in outcomes:
            _commit(store, node_id, [o], abandon, written)
        return
    written.extend(outcomes)


def _fail(store: Store, node_id: str, o: Outcome, err: BaseException,
          abandon: threading.Event) -> Outcome:
    """The photo whose rows the database refuses: failed now, with the reason
    (`labels retry` queues it again)."""
    failed = failed_outright(o.claim, f"cannot store its result: {_reason(err)}")
    log.debug("the write refused for %s", shown(o.claim.path), exc_info=err)
    try:
        retry_unavailable(lambda: contents.record_outcomes(store, node_id, [failed]), abandon,
                          f"recording the failure of {shown(os.path.basename(o.claim.path))}")
    except Stopped:
        raise
    except Exception:  # noqa: BLE001 - left claimed: the claim lease brings it back
        log.exception("cannot record the failure of %s", shown(o.claim.path))
    return failed


def _reason(err: BaseException) -> str:
    """The error in one short line of printable text (it is stored as the reason):
    the driver's own words, without the database's name."""
    if isinstance(err, StoreRejected) and err.__cause__ is not None:
        err = getattr(err.__cause__, "orig", None) or err.__cause__
    text = " ".join(str(err).split()) or type(err).__name__
    return "".join(ch for ch in text if ch.isprintable())[:300]


def log_outcome(o: Outcome) -> Tally:
    """Log one committed outcome; return the pipeline counter it adds to."""
    name = shown(os.path.basename(o.claim.path))
    match OutcomeKind(o.kind):
        case OutcomeKind.CLASSIFIED:
            log.info("labeled %s: %s", name,
                     ", ".join(f"{p.label} {p.score:.2f}" for p in o.predictions))
            return Tally.DONE
        case OutcomeKind.LINKED:
            log.info("linked %s: same content as an image already labeled", name)
            return Tally.LINKED
        case OutcomeKind.BAD_IMAGE:
            log.info("failed %s: %s", name, o.error)
            return Tally.FAILED
        case OutcomeKind.VANISHED:
            log.info("vanished %s before it could be read", name)
            return Tally.VANISHED
        case OutcomeKind.RETRY if o.claim.attempts + 1 >= workqueue.MAX_ATTEMPTS:
            log.info("failed %s: %s", name, o.error)  # out of attempts
            return Tally.FAILED
        case OutcomeKind.RETRY:
            log.info("will retry %s: %s", name, o.error)
            return Tally.RETRIED
        case OutcomeKind.EMBEDDED:
            log.info("embedded %s (labelled before; its labels are kept)", name)
            return Tally.EMBEDDED
        case OutcomeKind.NOT_EMBEDDED:
            log.info("not embedded %s: %s (tried again at the next walk)", name, o.error)
            return Tally.NOT_EMBEDDED


__all__ = ["ROWS_PER_TRANSACTION", "commit_outcomes", "log_outcome"]
