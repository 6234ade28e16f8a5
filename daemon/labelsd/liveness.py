"""How a running service shows it is alive, and notices what is not.

`Heartbeat` is the service's beat thread: every `nodes.HEARTBEAT_INTERVAL_S` it
checks that the database file is still the one it opened (store/dbfile.py),
stamps this node's heartbeat row and updates the systemd STATUS= line (the
`beat` callable), and every `RENEW_EVERY` beats renews the claim leases of the
images in flight. A lost database file ends the service (`on_lost`); any other
failure is logged and the beat goes on.

`take_over_dead_nodes` hands the claims of an earlier labelsd on this host that
is gone (kill -9, a crash) back to the queue at start, instead of after the
60 s claim lease.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from labelsd.errors import LabelsError
from labelsd.hostproc import process_gone
from labelsd.store import nodes, workqueue
from labelsd.store.dbfile import DatabaseLost, ServedFile
from labelsd.store.engine import Store

log = logging.getLogger(__name__)

RENEW_EVERY = 10  # heartbeats between claim-lease renewals (the lease is 60 s)


def take_over_dead_nodes(store: Store, node_id: str) -> None:
    """Claims of an earlier labelsd on this host that is gone go back to the queue."""
    workqueue.release_claims(store, node_id)  # a reused pid's leftovers
    for node in nodes.list_nodes(store):
        if node.node_id == node_id or not process_gone(node.host, node.pid):
            continue
        workqueue.release_claims(store, node.node_id)
        if node.alive:
            nodes.mark_stopped(store, node.node_id)
            log.info("took over the queue of %s, which is no longer running", node.node_id)


class Heartbeat:
    """A stoppable thread: `start()`, `stop()` (idempotent, joins)."""

    def __init__(self, store: Store, node_id: str, *, beat: Callable[[], None],
                 served: ServedFile | None, on_lost: Callable[[DatabaseLost], None],
                 interval_s: float = nodes.HEARTBEAT_INTERVAL_S):
        self.store = store
        self.node_id = node_id
        self.beat = beat
        self.served = served
        self.on_lost = on_lost
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _run(self) -> None:
        beats = 0
        while not self._stop.wait(self.interval_s):
            beats += 1
            try:
                if self.served is not None:
                    self.served.check()
                self.beat()
                if beats % RENEW_EVERY == 0:
                    workqueue.renew_claims(self.store, self.node_id)
            except DatabaseLost as err:
                self.on_lost(err)
                return
            except LabelsError as err:
                log.warning("heartbeat failed: %s", err)
            except Exception:  # noqa: BLE001 - the heartbeat must keep beating
                log.exception("heartbeat failed")

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)


__all__ = ["RENEW_EVERY", "Heartbeat", "take_over_dead_nodes"]
