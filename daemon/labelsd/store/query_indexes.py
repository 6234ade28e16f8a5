"""Migration 5: the indexes `labels stats` reads at a million images, so that
its top-labels count never reads a table's rows.

- `ix_predictions_first (sha256, label, rank) WHERE rank = 1`: each content's
  first label, in content order (rank is a column too: SQLite before 3.44 counts
  a partial index as covering only when the query's columns are all in it).
- `ix_paths_sha256_missing (sha256, missing)`: a content's present paths. It
  replaces `ix_paths_sha256 (sha256)`, its prefix (foreign-key checks and
  search's join from hits to paths use it alike), so writes pay nothing for it.

`labels stats` walks the first and looks each content up in the second. The
first costs the writer one index entry per content (about 7% of its CPU on
SQLite in bench/fleet.py's stand-in run). A covering (class_index, score,
sha256) index for search was tried and left out: it saved search about 0.1 s at
a million images but cost the writer about 15%. Self-contained (its own SQL, no
ORM): renumbering it changes nothing inside it.
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


__all__ = ["DESCRIPTION", "add_query_indexes"]
