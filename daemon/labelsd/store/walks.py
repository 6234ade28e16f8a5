"""One walker per shared root: N nodes watching one NAS share walk it once at
start, not N times.

A node that wants to walk a root (the start-up reconcile) takes its lease in
the `walks` table first (`WalkLeases.acquire`):

  * nobody holds it: this node takes it, walks, and records the walk as done;
  * another live node holds it (its lease is renewed while it walks): wait, then
    look again; a walker that dies stops renewing and its lease runs out, so a
    waiting node takes over (at once when the dead node is marked stopped: a
    restart on its host found its process gone);
  * the last walk began after this node registered, finished, and the node that
    did it is still alive: skip. Its
    walk found everything that changed before the walk, and its watch, up since
    before the walk and unbroken while it lives, sees everything after; this
    node's own watch is up by now too.

The nodes that skip still claim their share of the queue the walk fills. The
same lease, keyed "poll <root>" and held for as long as the node lives, picks
the one node that polls a root under `poll = true` (watch/shared.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, or_, select

from labelsd.errors import LabelsError
from labelsd.paths import shown
from labelsd.store import nodes
from labelsd.store.engine import Store, dialect_insert
from labelsd.store.schema import Node, as_utc, utcnow

log = logging.getLogger(__name__)

WALK_LEASE_S = 60.0  # renewed every third of it while the walk runs
WAIT_S = 2.0  # how often a node waiting on another's walk looks again

walks = Table("walks", MetaData(),
              Column("root", Text, primary_key=True), Column("held_by", String(200)),
              Column("expires_at", DateTime(timezone=True)),
              Column("started_at", DateTime(timezone=True)),
              Column("finished_at", DateTime(timezone=True)), Column("walked_by", String(200)))

MINE, BUSY, COVERED = "mine", "busy", "covered"


def take(store: Store, root: str, node_id: str, lease_s: float = WALK_LEASE_S) -> str:
    """One attempt: MINE (walk it now), BUSY (another live node walks it) or
    COVERED (a live node walked it since it was watched; skip)."""
    now = utcnow()
    with store.write() as session:
        row = session.execute(select(walks).where(walks.c.root == root)
                              .with_for_update()).first()
        gone = None  # a holder known to have stopped (killed -9, restarted on its host)
        if row is not None and row.held_by not in (None, node_id):
            if as_utc(row.expires_at) > now and not _stopped(session, row.held_by):
                return BUSY
            log.info("the lease on %s held by %s ran out or its node stopped; taking it over",
                     shown(root), row.held_by)
            gone = row.held_by
        elif row is not None and row.held_by is None and row.finished_at is not None \
                and row.walked_by != node_id and _alive(session, row.walked_by, now) \
                and _since_my_start(session, node_id, row.started_at):
            return COVERED
        values = {"held_by": node_id, "expires_at": now + timedelta(seconds=lease_s),
                  "started_at": now}
        # Conditional: with no row to lock above, two nodes may both get here; the
        # second one's insert meets the first's row and must not take it over.
        free = or_(walks.c.held_by.is_(None), walks.c.held_by == node_id, walks.c.expires_at < now,
                   walks.c.held_by == gone)
        ins = dialect_insert(session, walks)
        # RETURNING, not rowcount: psycopg reports -1 for an upsert that changed nothing.
        taken = session.execute(ins.values(root=root, **values).on_conflict_do_update(
            index_elements=["root"], set_=values, where=free).returning(walks.c.root)).first()
    return MINE if taken is not None else BUSY


def _since_my_start(session, node_id: str, walk_started) -> bool:
    """The walk began after this node registered: a walk from before (by a node
    killed since, whose heartbeat may still look fresh) does not cover the time
    no node watched."""
    mine = session.scalar(select(Node.started_at).where(Node.node_id == node_id))
    return mine is not None and walk_started is not None and as_utc(walk_started) >= as_utc(mine)


def _stopped(session, node_id: str) -> bool:
    """The node is marked stopped: it left (its leases are handed back anyway), or
    a restart on its host found its process gone (liveness.take_over_dead_nodes)."""
    return session.scalar(select(Node.stopped_at).where(Node.node_id == node_id)) is not None


def _alive(session, node_id: str | None, now) -> bool:
    row = session.execute(select(Node.heartbeat_at, Node.stopped_at)
                          .where(Node.node_id == node_id)).first()
    return (row is not None and row.stopped_at is None and row.heartbeat_at is not None
            and (now - as_utc(row.heartbeat_at)).total_seconds() <= nodes.ALIVE_WITHIN_S)


def renew(store: Store, root: str, node_id: str, lease_s: float = WALK_LEASE_S) -> None:
    with store.write() as session:
        session.execute(walks.update().where(walks.c.root == root, walks.c.held_by == node_id)
                        .values(expires_at=utcnow() + timedelta(seconds=lease_s)))


def release(store: Store, root: str, node_id: str, *, completed: bool) -> None:
    """Give the lease up; a completed walk is recorded (the others may skip theirs)."""
    values = {"held_by": None, "expires_at": None}
    if completed:
        values.update(finished_at=utcnow(), walked_by=node_id)
    with store.write() as session:
        session.execute(walks.update().where(walks.c.root == root, walks.c.held_by == node_id)
                        .values(**values))


class WalkLeases:
    """The hook the watcher's start-up walk calls: `acquire(root, stop)` before it
    (True: walk; False: skip, another node covers it) and `release(root, completed)`
    after; the lease is renewed in the background meanwhile."""

    def __init__(self, store: Store, node_id: str, lease_s: float = WALK_LEASE_S,
                 wait_s: float = WAIT_S):
        self.store = store
        self.node_id = node_id
        self.lease_s = lease_s
        self.wait_s = wait_s
        self._renewers: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def walk(self, root: str, stop: threading.Event, reconcile: Callable[[str], bool]) -> None:
        """Run `reconcile(root)` (True when it finished) under the lease, or skip it
        when another live node covers the root. Without the database's say, walk."""
        try:
            if not self.acquire(root, stop):
                return
        except LabelsError as err:
            log.warning("walk lease of %s unavailable (%s); walking it anyway", shown(root), err)
            reconcile(root)
            return
        completed = False
        try:
            completed = reconcile(root)
        finally:
            try:
                self.release(root, completed)
            except LabelsError as err:  # the lease runs out by itself
                log.warning("could not release the walk lease of %s: %s", shown(root), err)

    def acquire(self, root: str, stop: threading.Event) -> bool:
        announced = False
        while not stop.is_set():
            state = take(self.store, root, self.node_id, self.lease_s)
            if state == MINE:
                self._start_renewing(root)
                return True
            if state == COVERED:
                log.info("%s was walked by another live node; not walking it again", shown(root))
                return False
            if not announced:
                log.info("another node is walking %s; waiting for it", shown(root))
                announced = True
            stop.wait(self.wait_s)
        return False

    def release(self, root: str, completed: bool) -> None:
        with self._lock:
            done = self._renewers.pop(root, None)
        if done is not None:
            done.set()
        release(self.store, root, self.node_id, completed=completed)

    def _start_renewing(self, root: str) -> None:
        done = threading.Event()
        with self._lock:
            self._renewers[root] = done

        def renew_loop() -> None:
            while not done.wait(self.lease_s / 3):
                try:
                    renew(self.store, root, self.node_id, self.lease_s)
                except Exception:  # noqa: BLE001 - a missed renewal only risks a second walk
                    log.warning("could not renew the walk lease of %s", shown(root), exc_info=True)

        threading.Thread(target=renew_loop, name="walk-lease", daemon=True).start()


__all__ = ["WalkLeases", "release", "renew", "take"]
