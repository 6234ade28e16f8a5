"""The pipeline's write stage: one transaction per batch of outcomes, retried while
the database is locked, and one log line per image."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

from labelsd.backoff import Stopped, retry_unavailable
from labelsd.records import Outcome
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
                    Outcome(o.claim, "retry", error=f"cannot store the result: {err}")])
            except Exception:  # noqa: BLE001 - left claimed; the lease brings it back
                log.exception("cannot record a retry for %s", o.claim.path)


def log_outcome(o: Outcome) -> str:
    """Log one committed outcome; return the pipeline counter it adds to
    (done, linked, failed, vanished or retried)."""
    name = os.path.basename(o.claim.path)
    if o.kind == "classified":
        log.info("labeled %s: %s", name,
                 ", ".join(f"{p.label} {p.score:.2f}" for p in o.predictions))
        return "done"
    if o.kind == "linked":
        log.info("linked %s: same content as an image already labeled", name)
        return "linked"
    if o.kind == "bad_image":
        log.info("failed %s: %s", name, o.error)
        return "failed"
    if o.kind == "vanished":
        log.info("vanished %s before it could be read", name)
        return "vanished"
    if o.claim.attempts + 1 >= workqueue.MAX_ATTEMPTS:  # retry, out of attempts
        log.info("failed %s: %s", name, o.error)
        return "failed"
    log.info("will retry %s: %s", name, o.error)
    return "retried"


__all__ = ["commit_outcomes", "log_outcome"]
