"""Migration 5: the indexes `labels search` and `labels stats` read at a million
images, so that neither reads a table's rows to find what it counts or ranks.

- `ix_predictions_class_cover (class_index, score, sha256)`: search groups the
  contents of the matching classes by their best score from this index alone.
  It replaces `ix_predictions_class_score (class_index, score)`, its prefix.
- `ix_predictions_first (sha256, label, rank) WHERE rank = 1`: each content's
  first label, in content order (rank is a column too: SQLite before 3.44 counts
  a partial index as covering only when the query's columns are all in it).
- `ix_paths_sha256_missing (sha256, missing)`: a content's present paths. It
  replaces `ix_paths_sha256 (sha256)`, its prefix (foreign-key checks use it alike).

`labels stats` walks the second and looks each content up in the third; search
joins its hits to their paths through the third. Self-contained (its own SQL, no
ORM): renumbering it changes nothing inside it.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, text

log = logging.getLogger(__name__)

DESCRIPTION = "covering indexes for search and stats (class scores, first labels, present paths)"


def add_query_indexes(conn: Connection) -> None:
    for statement in (
            "CREATE INDEX ix_predictions_class_cover ON predictions (class_index, score, sha256)",
            "DROP INDEX ix_predictions_class_score",
            "CREATE INDEX ix_predictions_first ON predictions (sha256, label, rank) WHERE rank = 1",
            "CREATE INDEX ix_paths_sha256_missing ON paths (sha256, missing)",
            "DROP INDEX ix_paths_sha256"):
        conn.execute(text(statement))


__all__ = ["DESCRIPTION", "add_query_indexes"]
