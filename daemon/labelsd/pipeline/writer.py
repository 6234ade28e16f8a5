"""The pipeline's write stage: one transaction per batch of outcomes, retried while
the database is locked, and one log line per image."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

from labelsd.backoff import Stopped, retry_unavailable
from labelsd.records import Outcome, OutcomeKind, Tally
from labelsd.store import contents, workqueue
from labelsd.store.engine import Store

log = logging.getLogger(__name__)


def commit_outcomes(store: Store, node_id: str, outcomes: Sequence[Outcome],
                    abandon: threading.Event) -> bool:
    """record_outcomes in one transaction; a locked database is retried with back-off
    (outcomes are never dropped while the pipeline runs). False only when `abandon`
    is set while waiting (stop() ran out of time)."""
    try:
        retry_unavailable(lambda: contents.record_outcomes(store, node_id, outcomes), abandon,
                          f"writing {len(outcomes)} outcome(s)")
    except Stopped:
        return False
    except Exception:  # noqa: BLE001 - a bad row must not lose the whole batch
        log.exception("writing a batch failed; writing its outcomes one by one")
        _commit_one_by_one(store, node_id, outcomes)
    return True


def _commit_one_by_one(store: Store, node_id: str, outcomes: Sequence[Outcome]) -> None:
    for o in outcomes:
        try:
            contents.record_outcomes(store, node_id, [o])
        except Exception as err:  # noqa: BLE001
            log.exception("cannot record %s", o.claim.path)
            try:
                contents.record_outcomes(store, node_id, [
                    Outcome(o.claim, OutcomeKind.RETRY, error=f"cannot store the result: {err}")])
            except Exception:  # noqa: BLE001 - left claimed; the lease brings it back
                log.exception("cannot record a retry for %s", o.claim.path)


def log_outcome(o: Outcome) -> Tally:
    """Log one committed outcome; return the pipeline counter it adds to."""
    name = os.path.basename(o.claim.path)
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


__all__ = ["commit_outcomes", "log_outcome"]
