"""Migrations 5, 6 and 7: the indexes `labels stats` and `labels search` read at a
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

Migration 7, SQLite only: the rows `labels search` reads for each hit, in
fewer B-tree steps (at a million images, `cat` finds 18,738 images, each
looked up about eleven times; the lookups were most of its time):
- `predictions` rebuilt WITHOUT ROWID, stored in its primary key's order
  (content, rank): a label is one step down that key instead of an entry in
  its automatic index and then a row by rowid. Nothing references
  predictions, so dropping the old table cascades nowhere; the rebuilt table
  keeps its foreign key to contents (ON DELETE CASCADE) and its two indexes.
- `contents` likewise, by its key (sha256): a hit's content is one step; and
  `tags`, by (content, tag key): a content's tags are one step and a range.
  Paths, tags and predictions reference it: `migrate` runs with foreign keys
  off on SQLite (SQLite's own procedure for rebuilding a table), so dropping
  the old table cascades nowhere, and checks them all before it commits.
- `ix_paths_sha256_missing` carries the path as well (content, missing,
  path): a hit's present paths come from the index alone. Not on PostgreSQL,
  whose B-tree entries are limited to about 2.7 kB, which a path in a deep
  tree can pass (SQLite moves long keys to overflow pages).
PostgreSQL keeps its layout: the migration only records itself there.

Each is self-contained (its own SQL, no ORM): renumbering one changes
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


CLUSTER_DESCRIPTION = ("SQLite: predictions, contents and tags clustered by content, "
                       "present paths by content with path")

# predictions as migration 1 created it (frozen: the models may change), clustered.
_CLUSTERED_PREDICTIONS = """CREATE TABLE predictions_clustered (
	sha256 VARCHAR(64) NOT NULL,
	rank INTEGER NOT NULL,
	model VARCHAR(80) NOT NULL,
	class_index INTEGER NOT NULL,
	wnid VARCHAR(16) NOT NULL,
	label TEXT NOT NULL,
	score FLOAT NOT NULL,
	PRIMARY KEY (sha256, rank),
	FOREIGN KEY(sha256) REFERENCES contents (sha256) ON DELETE CASCADE
) WITHOUT ROWID"""
_PREDICTION_COLUMNS = "sha256, rank, model, class_index, wnid, label, score"
# contents as migrations 1 and 3 left it, clustered.
_CLUSTERED_CONTENTS = """CREATE TABLE contents_clustered (
	sha256 VARCHAR(64) NOT NULL,
	size BIGINT NOT NULL,
	width INTEGER,
	height INTEGER,
	format VARCHAR(16),
	status VARCHAR(16) NOT NULL,
	error TEXT,
	model VARCHAR(80),
	classified_at DATETIME,
	taken_at VARCHAR(32),
	camera VARCHAR(200),
	gps_lat FLOAT,
	gps_lon FLOAT,
	PRIMARY KEY (sha256)
) WITHOUT ROWID"""
_CONTENT_COLUMNS = ("sha256, size, width, height, format, status, error, model, classified_at, "
                    "taken_at, camera, gps_lat, gps_lon")
# tags as migrations 1 and 3 left it, clustered.
_CLUSTERED_TAGS = """CREATE TABLE tags_clustered (
	sha256 VARCHAR(64) NOT NULL,
	tag_key VARCHAR(200) NOT NULL,
	tag VARCHAR(200) NOT NULL,
	created_at DATETIME NOT NULL,
	imported BOOLEAN NOT NULL DEFAULT FALSE,
	PRIMARY KEY (sha256, tag_key),
	FOREIGN KEY(sha256) REFERENCES contents (sha256) ON DELETE CASCADE
) WITHOUT ROWID"""
_TAG_COLUMNS = "sha256, tag_key, tag, created_at, imported"


def cluster_search_rows(conn: Connection) -> None:
    if conn.dialect.name != "sqlite":  # PostgreSQL has no clustered tables to keep
        return
    for statement in (
            _CLUSTERED_PREDICTIONS,
            f"INSERT INTO predictions_clustered ({_PREDICTION_COLUMNS}) "
            f"SELECT {_PREDICTION_COLUMNS} FROM predictions ORDER BY sha256, rank",
            "DROP TABLE predictions",
            "ALTER TABLE predictions_clustered RENAME TO predictions",
            "CREATE INDEX ix_predictions_search ON predictions (class_index, score, sha256)",
            "CREATE INDEX ix_predictions_first ON predictions (sha256, label, rank) WHERE rank = 1",
            _CLUSTERED_CONTENTS,
            f"INSERT INTO contents_clustered ({_CONTENT_COLUMNS}) "
            f"SELECT {_CONTENT_COLUMNS} FROM contents ORDER BY sha256",
            "DROP TABLE contents",  # foreign keys are off: nothing cascades (see migrate)
            "ALTER TABLE contents_clustered RENAME TO contents",
            "CREATE INDEX ix_contents_taken_at ON contents (taken_at)",
            "CREATE INDEX ix_contents_not_done ON contents (sha256) WHERE status <> 'done'",
            _CLUSTERED_TAGS,
            f"INSERT INTO tags_clustered ({_TAG_COLUMNS}) "
            f"SELECT {_TAG_COLUMNS} FROM tags ORDER BY sha256, tag_key",
            "DROP TABLE tags",
            "ALTER TABLE tags_clustered RENAME TO tags",
            "CREATE INDEX ix_tags_tag_key ON tags (tag_key)",
            "DROP INDEX ix_paths_sha256_missing",
            "CREATE INDEX ix_paths_sha256_missing ON paths (sha256, missing, path)"):
        conn.execute(text(statement))


__all__ = ["CLUSTER_DESCRIPTION", "DESCRIPTION", "SEARCH_DESCRIPTION", "add_query_indexes",
           "add_search_index", "cluster_search_rows"]
