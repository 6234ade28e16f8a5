"""Each content's vector in the database: writing a batch's vectors (inside the
writer's one transaction, contents.record_outcomes), which contents still lack
one (the backfill's picks). How far the library is (`labels status`) is read
by labelsd.vectors.library, without SQLAlchemy.

A vector belongs to an embedding space: the model that made it and the stored form
(labelsd.vectors.codec.CODEC), one `embedding_spaces` row each. A content holds one
vector, of the space that made it last: a classification by another model (a
switch, new weights) replaces it; one by the same space keeps the first (written by
another path, node or an earlier run: the same bytes give the same vector). Vectors
of two spaces are never compared, so after a model switch a content is found by
`labels similar` again once the active model has embedded it, as its labels are
searched again once relabelled.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from labelsd.records import Outcome, OutcomeKind
from labelsd.store import pgbatch
from labelsd.store.engine import Store, dialect_insert, write_rows
from labelsd.store.schema import Content, Embedding, EmbeddingSpace, utcnow
from labelsd.vectors.codec import CODEC  # (no numpy at import)

log = logging.getLogger(__name__)

WITH_VECTORS = (OutcomeKind.CLASSIFIED, OutcomeKind.EMBEDDED)


def space_id(session: Session, model: str, codec: str) -> int:
    """The id of the (model, codec) space, created on first use (with a fresh token)."""
    table = EmbeddingSpace.__table__
    found = session.scalar(select(table.c.id).where(table.c.model == model, table.c.codec == codec))
    if found is not None:
        return found
    session.execute(dialect_insert(session, table).on_conflict_do_nothing(
        index_elements=["model", "codec"]), [{"model": model, "codec": codec,
                                              "token": secrets.token_hex(16), "created_at": utcnow()}])
    return session.scalar(select(table.c.id).where(table.c.model == model, table.c.codec == codec))


def store_vectors(session: Session, outcomes: Sequence[Outcome], codec: str = CODEC) -> int:
    """Write the vectors the batch's outcomes carry (the first per content), in the
    writer's transaction. A backfill's vector whose content is gone is dropped.
    Returns how many rows were written."""
    wanted: dict[str, tuple[str, bytes]] = {}
    backfilled: set[str] = set()
    for o in outcomes:
        if o.kind in WITH_VECTORS and o.embedding is not None and o.sha256 and o.model:
            wanted.setdefault(o.sha256, (o.model, o.embedding))
            if o.kind == OutcomeKind.EMBEDDED:
                backfilled.add(o.sha256)
    if backfilled:  # labelled before, so the content exists, unless deleted since
        c = Content.__table__.c
        present = set(session.scalars(select(c.sha256).where(c.sha256.in_(sorted(backfilled)))))
        for sha in backfilled - present:
            del wanted[sha]
    if not wanted:
        return 0
    table = Embedding.__table__
    written = 0
    for model in sorted({model for model, _ in wanted.values()}):
        space = space_id(session, model, codec)
        rows = [{"sha256": sha, "space": space, "vector": vector}
                for sha, (m, vector) in sorted(wanted.items()) if m == model]
        # another space's vector of these contents goes (the model changed)
        session.execute(delete(table).where(table.c.sha256.in_([r["sha256"] for r in rows]),
                                            table.c.space != space))
        if pgbatch.is_pg(session):
            pgbatch.insert_rows(session, table, rows, pgbatch.upsert_sql(["sha256"]))
        else:
            write_rows(session, dialect_insert(session, table).on_conflict_do_nothing(
                index_elements=["sha256"]), rows)
        written += len(rows)
    return written


# ---- the backfill: contents labelled without a vector of the active model ----------

# Contents in key order from a cursor, each looked up in the embeddings by key; the
# first present path of each (None: no file to read it from).
_TO_EMBED_SQL = (
    "SELECT c.sha256, (SELECT p.path FROM paths p WHERE p.sha256 = c.sha256 AND NOT p.missing "
    "ORDER BY p.path LIMIT 1) FROM contents c WHERE c.status = 'done' AND c.sha256 > :after "
    "AND NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.sha256 = c.sha256 AND e.space = :space) "
    "ORDER BY c.sha256 LIMIT :n")
# `labels scan DIR`: the present paths under DIR in path order from a cursor (the
# cursor is then a path), so a small folder in a large library is a short walk.
# SQLite also bounds the range from above ("/" + 1 is "0": its text compares by
# bytes); PostgreSQL's collation may not, so it filters by the prefix alone.
_UNDER_SQL = (
    "SELECT p.sha256, p.path FROM paths p JOIN contents c ON c.sha256 = p.sha256 "
    "WHERE p.path > :after AND substr(p.path, 1, :length) = :folder{upper} AND NOT p.missing "
    "AND c.status = 'done' "
    "AND NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.sha256 = p.sha256 AND e.space = :space) "
    "ORDER BY p.path LIMIT :n")


def contents_to_embed(store: Store, model: str, after: str, limit: int, under: str | None = None,
                      codec: str = CODEC) -> list[tuple[str, str | None, str]]:
    """Up to `limit` (sha256, path, cursor) of labelled contents that hold no vector of
    (model, codec), in the order of a walk that resumes after the cursor `after`:
    over every content (path None where no present file can give it one), or with
    `under` over the present paths under that folder."""
    params: dict = {"after": after, "n": limit}
    if under:
        folder = under.rstrip("/") + "/"
        params.update(folder=folder, length=len(folder), upper=folder[:-1] + "0")
        sql = _UNDER_SQL.format(upper=" AND p.path < :upper" if store.dialect == "sqlite" else "")
    else:
        sql = _TO_EMBED_SQL
    with store.read() as session:
        t = EmbeddingSpace.__table__
        space = session.scalar(select(t.c.id).where(t.c.model == model, t.c.codec == codec))
        params["space"] = -1 if space is None else space
        rows = session.execute(text(sql), params).all()
    return [(sha, path, path if under else sha) for sha, path in rows]


def count_to_embed_under(store: Store, family: str, folder: str) -> int:
    """Labelled contents with a present path under `folder` that hold no vector of any
    model of `family` (what `labels scan` would embed; the exact model is known only
    once loaded)."""
    from sqlalchemy import distinct, exists, func, or_

    from labelsd.store.schema import TrackedPath

    e, s = Embedding.__table__.c, EmbeddingSpace.__table__.c
    vector = exists().where(e.sha256 == TrackedPath.sha256, e.space == s.id,
                            or_(s.model == family, s.model.startswith(family + "/", autoescape=True)))
    stmt = (select(func.count(distinct(TrackedPath.sha256)))
            .join(Content, Content.sha256 == TrackedPath.sha256)
            .where(TrackedPath.path.startswith(folder.rstrip("/") + "/", autoescape=True),
                   TrackedPath.missing.is_(False), Content.status == "done", ~vector))
    with store.read() as session:
        return int(session.scalar(stmt) or 0)


__all__ = ["WITH_VECTORS", "contents_to_embed", "count_to_embed_under", "space_id", "store_vectors"]
