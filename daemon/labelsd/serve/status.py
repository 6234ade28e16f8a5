"""What `labels status` reports: the service nodes sharing the library (alive
while their heartbeat is fresh) beside the library's counts, read through a
`Reader` (serve/reader.py), like the rest of what the query commands read."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from labelsd.hostproc import process_gone
from labelsd.model.precision import read_note, summary
from labelsd.serve.reader import as_reader, as_utc, where_shown

log = logging.getLogger(__name__)

ALIVE_WITHIN_S = 10.0  # as store.nodes.ALIVE_WITHIN_S (a test checks they agree)
STALE_NODE_S = 24 * 3600  # stopped nodes older than this are left out of `labels status`
RUNTIMES = ("litert", "tensorflow")  # labelsd.model.runtime.runtime_kind's answers


def runtime_of(device: str | None) -> tuple[str, str]:
    """(runtime, precision) from the device string a service registers
    (`labelsd.model.runtime.describe`: "cpu, litert int8", "gpu:0 NVIDIA H200,
    tensorflow fp16"); ("", "") for a node that registered only its device (an older
    labelsd) or none."""
    head, _, tail = (device or "").rpartition(", ")
    runtime, _, precision = tail.partition(" ")
    if not head or runtime not in RUNTIMES or not precision or " " in precision:
        return "", ""
    return runtime, precision


def list_nodes(source) -> list[dict]:
    """Every node ever registered, most recent heartbeat first."""
    now = datetime.now(timezone.utc)
    with as_reader(source).read() as run:
        rows = run("SELECT node_id, host, pid, model, device, watching, heartbeat_at, "
                   "stopped_at, done, failed FROM nodes", {})
    nodes = []
    for node_id, host, pid, model, device, watching, beat, stopped, done, failed in rows:
        beat = as_utc(beat)
        age = None if beat is None else max(0.0, (now - beat).total_seconds())
        device, choice = read_note(device)  # what `auto` measured, registered after the device
        runtime, precision = runtime_of(device)
        nodes.append({"node_id": node_id, "host": host, "pid": pid, "device": device or "",
                      "runtime": runtime, "precision": precision,
                      "auto": summary(choice) if choice is not None else None,
                      "model": model or "", "watching": json.loads(watching or "[]"),
                      "heartbeat_age_s": age,
                      "alive": stopped is None and age is not None and age <= ALIVE_WITHIN_S
                      and not process_gone(host, pid),
                      "done": done, "failed": failed})
    nodes.sort(key=lambda n: n["heartbeat_age_s"] if n["heartbeat_age_s"] is not None else 1e18)
    return nodes


def service_status(source, *, all_nodes: bool = False) -> dict:
    """`labels status --json`, the contract in docs/contract.md plus `database` and a
    `nodes` list (each node's `done`/`failed` count what it did since it started).

    `running` is true while some node is alive; pid, model, device, watching
    and heartbeat_age_s describe the freshest node (alive ones first), null or
    empty when no service ever registered. `embeddings` says how far the library
    is embedded (`embedding_progress`). Nodes not heard from for a day are
    left out of `nodes` unless `all_nodes`."""
    reader = as_reader(source)
    nodes = list_nodes(reader)
    counts = reader.counts()
    freshest = sorted(nodes, key=lambda n: not n["alive"])[0] if nodes else None
    shown = [n for n in nodes if all_nodes or n["alive"] or (
        n["heartbeat_age_s"] is not None and n["heartbeat_age_s"] < STALE_NODE_S)]
    return {
        "running": any(n["alive"] for n in nodes),
        "pid": freshest["pid"] if freshest else None,
        "model": freshest["model"] if freshest else "",
        "device": freshest["device"] if freshest else "",
        "runtime": freshest["runtime"] if freshest else "",
        "precision": freshest["precision"] if freshest else "",
        "auto": freshest["auto"] if freshest else None,
        "watching": list(freshest["watching"]) if freshest else [],
        "queued": counts["pending"],
        "done": counts["done"],
        "failed": counts["failed"],
        "missing": counts["missing"],
        "heartbeat_age_s": freshest["heartbeat_age_s"] if freshest else None,
        "database": where_shown(reader.where),
        "nodes": shown,
        "nodes_hidden": len(nodes) - len(shown),
        "embeddings": embedding_progress(reader, freshest["model"] if freshest else ""),
    }


def service_running(source) -> bool:
    """Whether a live labelsd serves this library now (`labels status`'s `running`)."""
    return any(node["alive"] for node in list_nodes(source))


def embedding_progress(reader, model: str) -> dict | None:
    """{"model", "done", "total"}: how many labelled contents hold a vector of the
    service's model (of the fullest model's when no service ran); None for a database
    from before embeddings (migration 9 runs when a service next starts)."""
    from labelsd.errors import StoreRejected, StoreUnavailable
    from labelsd.vectors.spaces import find_space, progress

    try:
        with reader.read() as run:
            if not model:
                fullest = find_space(run)
                model = fullest.model if fullest else ""
            return progress(run, model)
    except (StoreUnavailable, StoreRejected):  # no such table: SQLite says one, PostgreSQL the other
        log.debug("no embeddings in %s (an older database)", where_shown(reader.where), exc_info=True)
        return None


def watched_roots(source) -> list[str]:
    """The folders the live nodes watch (for explaining untracked paths)."""
    roots: list[str] = []
    for node in list_nodes(source):
        if node["alive"]:
            roots += [r for r in node["watching"] if r not in roots]
    return roots


__all__ = ["ALIVE_WITHIN_S", "STALE_NODE_S", "list_nodes", "runtime_of", "service_running", "service_status",
           "watched_roots"]
