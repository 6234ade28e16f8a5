"""How a running service shows it is alive, and notices what is not.

`Heartbeat` is the service's beat thread: every `nodes.HEARTBEAT_INTERVAL_S` it
checks that the database file is still the one it opened (store/dbfile.py),
stamps this node's heartbeat row and updates the systemd STATUS= line (the
`beat` callable). The claim leases of the images in flight are renewed by the
pipeline's claimer, which holds them (pipeline/claimer.py says why only there).
A lost database file ends the service (`on_lost`); any other
failure is logged and the beat goes on.

`take_over_dead_nodes` hands the claims of an earlier labelsd on this host that
is gone (kill -9, a crash) back to the queue at start, instead of after the
60 s claim lease.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from labelsd.errors import LabelsError
from labelsd.hostproc import process_gone
from labelsd.loopthread import LoopThread
from labelsd.store import nodes, workqueue
from labelsd.store.dbfile import DatabaseLost, ServedFile
from labelsd.store.engine import Store

log = logging.getLogger(__name__)


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


class Heartbeat(LoopThread):
    """The beat thread: `start()`, `stop()` (idempotent, joins)."""

    def __init__(self, store: Store, node_id: str, *, beat: Callable[[], None],
                 served: ServedFile | None, on_lost: Callable[[DatabaseLost], None],
                 interval_s: float = nodes.HEARTBEAT_INTERVAL_S):
        self.store = store
        self.node_id = node_id
        self.beat = beat
        self.served = served
        self.on_lost = on_lost
        self.interval_s = interval_s
        super().__init__("heartbeat")

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if self.served is not None:
                    self.served.check()
                self.beat()
            except DatabaseLost as err:
                self.on_lost(err)
                return
            except LabelsError as err:
                log.warning("heartbeat failed: %s", err)
            except Exception:  # noqa: BLE001 - the heartbeat must keep beating
                log.exception("heartbeat failed")


__all__ = ["Heartbeat", "take_over_dead_nodes"]
