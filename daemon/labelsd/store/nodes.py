"""Service liveness: each running labelsd is a node with a heartbeat row.

`labels status` reads these rows; a node is alive only while its heartbeat is
fresh and, on this host, while its process exists, so a killed service (even
one killed during its start, seconds after registering) is never reported as
running."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from labelsd.hostproc import process_gone
from labelsd.store.engine import Store
from labelsd.store.schema import Node, as_utc, utcnow

HEARTBEAT_INTERVAL_S = 2.0
ALIVE_WITHIN_S = 10.0


def node_id_for_this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class NodeStatus:
    node_id: str
    host: str
    pid: int
    model: str | None
    device: str | None
    watching: list[str]
    heartbeat_age_s: float | None
    alive: bool
    done: int
    failed: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def register(store: Store, node_id: str, *, model: str | None, device: str | None,
             watching: list[str]) -> None:
    now = utcnow()
    with store.write() as session:
        node = session.get(Node, node_id)
        if node is None:
            node = Node(node_id=node_id, host=socket.gethostname(), pid=os.getpid())
            session.add(node)
        node.model, node.device, node.watching = model, device, json.dumps(watching)
        node.started_at, node.heartbeat_at, node.stopped_at = now, now, None
        node.done, node.failed = 0, 0


def heartbeat(store: Store, node_id: str, *, done: int, failed: int,
              watching: list[str] | None = None) -> None:
    with store.write() as session:
        node = session.get(Node, node_id)
        if node is None:
            return
        node.heartbeat_at, node.done, node.failed = utcnow(), done, failed
        if watching is not None:
            node.watching = json.dumps(watching)


def mark_stopped(store: Store, node_id: str) -> None:
    with store.write() as session:
        node = session.get(Node, node_id)
        if node is not None:
            node.stopped_at = utcnow()


def _age(heartbeat_at: datetime | None, now: datetime) -> float | None:
    if heartbeat_at is None:
        return None
    return max(0.0, (now - as_utc(heartbeat_at)).total_seconds())


def list_nodes(store: Store, alive_within_s: float = ALIVE_WITHIN_S) -> list[NodeStatus]:
    """Every node ever registered, most recent heartbeat first."""
    now = utcnow()
    with store.read() as session:
        rows = session.scalars(select(Node)).all()
    result = []
    for n in rows:
        age = _age(n.heartbeat_at, now)
        alive = n.stopped_at is None and age is not None and age <= alive_within_s
        if alive and process_gone(n.host, n.pid):
            alive = False  # crashed (kill -9, during its start) before its heartbeat aged
        result.append(NodeStatus(
            node_id=n.node_id, host=n.host, pid=n.pid, model=n.model, device=n.device,
            watching=json.loads(n.watching or "[]"), heartbeat_age_s=age, alive=alive,
            done=n.done, failed=n.failed))
    result.sort(key=lambda s: s.heartbeat_age_s if s.heartbeat_age_s is not None else 1e18)
    return result


def watched_roots(store: Store) -> list[str]:
    """The folders the live nodes watch (for explaining untracked paths)."""
    roots: list[str] = []
    for node in list_nodes(store):
        if node.alive:
            roots += [r for r in node.watching if r not in roots]
    return roots
