"""The embedding spaces a library holds (store/embeddings.py writes them) and how far
it is embedded, read with plain SQL through any `run(sql, params)` and without numpy:
`labels status` reads its progress line here at the cost of two counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from labelsd.vectors.codec import CODEC


@dataclass(frozen=True)
class Space:
    id: int
    model: str
    codec: str
    token: str

    @property
    def family(self) -> str:
        return self.model.split("/", 1)[0]


def spaces(run) -> list[Space]:
    """Every embedding space of this codec (vectors of another codec are never read)."""
    rows = run("SELECT s.id, s.model, s.codec, s.token FROM embedding_spaces s WHERE s.codec = :codec",
               {"codec": CODEC})
    return [Space(int(i), model, codec, token) for i, model, codec, token in rows]


def counter(run, name: str) -> int:
    """A counter the triggers keep (migrations 4 and 9): the sum of its shards."""
    return int(run("SELECT coalesce(sum(n), 0) FROM counters WHERE name = :name", {"name": name})[0][0] or 0)


def count(run, space: Space) -> int:
    """How many vectors the space holds (a counter: the same cost at any size)."""
    return counter(run, f"embeddings:{space.id}")


def find_space(run, model: str | None = None, family: str | None = None) -> Space | None:
    """The space of `model` (a stored name, "EfficientNetLite0/imagenet"); else the
    fullest space of `family` ("EfficientNetLite0"); else the fullest of all."""
    found = spaces(run)
    if model is not None:
        return next((s for s in found if s.model == model), None)
    if family is not None:
        found = [s for s in found if s.family == family]
    counted = [(count(run, s), s.id, s) for s in found]
    return max(counted)[2] if counted else None


def progress(run, model: str) -> dict:
    """`labels status`'s "embeddings": {"model", "done": contents holding a vector of
    `model`, "total": contents labelled}."""
    space = find_space(run, model=model)
    done = count(run, space) if space else 0
    # every content, less those not done (the partial index of outstanding work holds only them)
    total = counter(run, "contents") - int(run("SELECT count(*) FROM contents WHERE status <> 'done'", {})[0][0])
    return {"model": model, "done": done, "total": total}


__all__ = ["Space", "count", "counter", "find_space", "progress", "spaces"]
