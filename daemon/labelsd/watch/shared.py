"""Polling a shared root once per fleet.

With `poll = true` (a NAS share: inotify does not hear what other machines
write there) every node used to snapshot the whole share, every second. Now a
root is polled only by the node holding its poll lease, a row of the `walks`
table keyed "poll <root>" (store/walks.py, the same lease as the start-up
walk's); the other nodes keep claiming the work it queues. The holder renews
the lease at every root check (`tick`, every few seconds, well within
POLL_LEASE_S); a node that stops releases it; a node that dies stops renewing
it, and within POLL_LEASE_S another node's tick takes it over, starts polling
and rescans the root for what changed while nobody looked.

Without the database's say (it is down when a node starts), the node polls:
two nodes polling one share costs time, never a lost file.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from labelsd.errors import LabelsError
from labelsd.paths import shown
from labelsd.store import walks

log = logging.getLogger(__name__)

POLL_LEASE_S = 30.0  # a dead poller's roots are taken over within this


def lease_key(root: str) -> str:
    return f"poll {root}"


def fleet_polls(watches, poll: bool, walk_leases, rescan: Callable[[str], None]):
    """SharedPolls when the roots are polled and the node is in a fleet (it has
    walk leases: their store and node id serve the poll leases too), else Unshared."""
    if poll and walk_leases is not None:
        return SharedPolls(walk_leases.store, walk_leases.node_id, watches, rescan)
    return Unshared(watches)


class Unshared:
    """Every root watched by this node (inotify, or poll = true with no fleet lease)."""

    def __init__(self, watches):
        self.add, self.remove = watches.add, watches.remove

    def tick(self) -> None:
        pass

    def stop(self) -> None:
        pass


class SharedPolls:
    """Stands in for `Watches.add/remove` of a polled root in a fleet: the root is
    handed to `watches` only while this node holds its poll lease. `rescan(root)`
    runs when a lease is taken over from another node (not at start: the
    start-up walk covers that)."""

    def __init__(self, store, node_id: str, watches, rescan: Callable[[str], None],
                 lease_s: float | None = None):
        self.store = store
        self.node_id = node_id
        self.lease_s = lease_s or POLL_LEASE_S
        self._watches = watches
        self._rescan = rescan
        self._roots: list[str] = []
        self.held: set[str] = set()  # the roots this node polls now
        self._lock = threading.Lock()

    def add(self, root: str) -> None:
        with self._lock:
            self._roots.append(root)
        self._step(root, startup=True)

    def remove(self, root: str) -> None:
        with self._lock:
            if root in self._roots:
                self._roots.remove(root)
            held = root in self.held
            self.held.discard(root)
        self._watches.remove(root)
        if held:
            self._release(root)

    def tick(self) -> None:
        """Renew the leases held, take over the ones run out (from the root checks)."""
        with self._lock:
            roots = list(self._roots)
        for root in roots:
            self._step(root)

    def stop(self) -> None:
        """Hand the leases back (the watches are stopped already): another node
        takes a root over at its next tick, not after the lease runs out."""
        with self._lock:
            held, self.held = set(self.held), set()
        for root in held:
            self._release(root)

    def _step(self, root: str, startup: bool = False) -> None:
        try:
            mine = walks.take(self.store, lease_key(root), self.node_id, self.lease_s) == walks.MINE
        except LabelsError as err:
            if not startup:  # keep polling, or not, as before; the next tick tries again
                log.debug("poll lease of %s not renewed: %s", shown(root), err)
                return
            log.warning("poll lease of %s unavailable (%s); polling it anyway", shown(root), err)
            mine = True
        with self._lock:
            if root not in self._roots:
                return
            taking, leaving = mine and root not in self.held, not mine and root in self.held
            if taking:
                self.held.add(root)
            elif leaving:
                self.held.discard(root)
        if taking:
            try:
                self._watches.add(root)
            except LabelsError as err:  # another node may reach it: hand the lease back
                with self._lock:
                    self.held.discard(root)
                self._release(root)
                if startup:
                    raise
                log.warning("%s; leaving it to another node", err)
                return
            if not startup:
                log.info("took over polling %s (its poller stopped or died); rescanning it", shown(root))
                self._rescan(root)
        elif leaving:
            self._watches.remove(root)
            log.info("another node polls %s now; this node stops polling it", shown(root))
        elif startup and not mine:
            log.info("another node polls %s; this node takes its share of the work", shown(root))

    def _release(self, root: str) -> None:
        try:
            walks.release(self.store, lease_key(root), self.node_id, completed=False)
        except LabelsError as err:  # it runs out by itself
            log.warning("could not hand back the poll lease of %s: %s", shown(root), err)


__all__ = ["POLL_LEASE_S", "SharedPolls", "Unshared", "fleet_polls", "lease_key"]
