"""Which database errors waiting can cure: an outage (locked, busy, a full disk, a
lost connection, a server shutting down) is retried with the one back-off; a
statement that can never succeed (a value out of range or too long, a NUL
PostgreSQL refuses, more bound values than the driver sends, a constraint) is
not, so the writer can fail the one photo that brought it and write the rest.

Told by the driver's own codes: SQLite's primary result code, PostgreSQL's
SQLSTATE class. What neither list names counts as an outage: a photo failed
wrongly is worse than a batch retried.
"""

from __future__ import annotations

import sqlite3

# SQLite primary result codes no retry cures: SQLITE_ERROR (too many SQL variables,
# no such table), TOOBIG, CONSTRAINT, MISMATCH, MISUSE, RANGE.
_SQLITE_FOR_GOOD = {1, 18, 19, 20, 21, 25}
# PostgreSQL SQLSTATE classes no retry cures: data exceptions (22: out of range,
# too long, bad encoding), integrity (23), cardinality (21), syntax and undefined
# objects (42, but not 42501, a privilege an administrator can grant), program
# limits (54), features not supported (0A).
_PG_FOR_GOOD = {"21", "22", "23", "42", "54", "0A"}
_PG_CURABLE = {"42501"}
# Client-side refusals psycopg raises without a SQLSTATE.
_PG_CLIENT_FOR_GOOD = ("number of parameters must be between", "cannot contain nul")


def cannot_succeed(err: BaseException) -> bool:
    """Whether the driver error `err` (a DBAPI error, or SQLAlchemy's wrapper of
    one) says the statement can never succeed, whatever the wait."""
    orig = getattr(err, "orig", None) or err
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        if code is None:  # raised by the sqlite3 module itself, not by SQLite
            return isinstance(orig, (sqlite3.ProgrammingError, sqlite3.InterfaceError,
                                     sqlite3.DataError, sqlite3.IntegrityError))
        return code & 0xFF in _SQLITE_FOR_GOOD
    state = getattr(orig, "sqlstate", None)
    if state:
        return state not in _PG_CURABLE and state[:2] in _PG_FOR_GOOD
    text = str(orig).lower()
    if any(phrase in text for phrase in _PG_CLIENT_FOR_GOOD):
        return True
    return type(orig).__name__ in ("DataError", "IntegrityError", "ProgrammingError", "NotSupportedError")


__all__ = ["cannot_succeed"]
