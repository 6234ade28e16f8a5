"""Migrations 5 and 7: the indexes `labels stats` and `labels search` read at a
million images, so that stats' top-labels count never reads a table's rows,
nor search's best scores.

- `ix_predictions_first (sha256, label, rank) WHERE rank = 1`: each content's
  first label, in content order (rank is a column too: SQLite before 3.44 counts
  a partial index as covering only when the query's columns are all in it).
- `ix_paths_sha256_missing (sha256, missing)`: a content's present paths. It
  replaces `ix_paths_sha256 (sha256)`, its prefix (foreign-key checks and
  search's join from hits to paths use it alike), so writes pay nothing for it.

`labels stats` walks the first and looks each content up in the second. The
first costs the writer one index entry per content (about 7% of its CPU on
SQLite in bench/fleet.py's stand-in run).

Migration 6: `ix_predictions_search (class_index, score, sha256)`, the index
`labels search` finds each content's best matching score in, read alone (no
predictions row per matching label: at a million images, 39,000 rows read at
random for `cat`). It replaces `ix_predictions_class_score (class_index,
score)`, its prefix, so the writer keeps one index entry per label, only wider
(added beside it instead, it cost the writer about 15%).

Both are self-contained (their own SQL, no ORM): renumbering one changes
nothing inside it.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, text

log = logging.getLogger(__name__)

DESCRIPTION = "covering indexes for stats (first labels by content, present paths by content)"


def add_query_indexes(conn: Connection) -> None:
    for statement in (
            "CREATE INDEX ix_predictions_first ON predictions (sha256, label, rank) WHERE rank = 1",
            "CREATE INDEX ix_paths_sha256_missing ON paths (sha256, missing)",
            "DROP INDEX ix_paths_sha256"):
        conn.execute(text(statement))


SEARCH_DESCRIPTION = "search's best scores from an index alone (class, score, content)"


def add_search_index(conn: Connection) -> None:
    for statement in (
            "CREATE INDEX ix_predictions_search ON predictions (class_index, score, sha256)",
            "DROP INDEX ix_predictions_class_score"):
        conn.execute(text(statement))


__all__ = ["DESCRIPTION", "SEARCH_DESCRIPTION", "add_query_indexes", "add_search_index"]
