"""The leaf helpers every plain-SQL module of the store shares (recordsql,
judgedsql, and the read-only reader through them): how many values go in one
`IN (...)` list, the `run(sql, params) -> rows` a read transaction hands out, and
a stored time as UTC. No SQLAlchemy: `labels search` never imports it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone

Run = Callable[[str, dict], list]

# The most values in one `IN (...)` list: SQLite before 3.32 allowed 999 bound
# variables per statement; 500 stays below it with room to spare.
CHUNK = 500


def in_list(name: str, values: Sequence, params: dict) -> str:
    """`:name0, :name1, ...` for an IN (...) list, its values added to `params`."""
    for i, value in enumerate(values):
        params[f"{name}{i}"] = value
    return ", ".join(f":{name}{i}" for i in range(len(values))) or "NULL"


def as_utc(value) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite hands back text, naive)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return (value.replace(tzinfo=timezone.utc) if value.tzinfo is None
            else value.astimezone(timezone.utc))


__all__ = ["CHUNK", "Run", "as_utc", "in_list"]
