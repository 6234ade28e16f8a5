"""The database schema as typed SQLAlchemy 2.0 ORM models.

Content identity is the SHA-256 of the file bytes: labels and tags belong to a
`Content`; a `TrackedPath` points at one. The `QueueItem` table is the durable
work queue: a path waits there until its content has been read and classified.
The schema is created and upgraded by `labelsd.store.migrations`, never by
`create_all`, so these models must match the newest migration (a test checks).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# A stored time as an aware UTC datetime (SQLite hands back naive ones, or text):
# one function for the ORM's readers and the record SQL's.
from labelsd.store.recordsql import as_utc  # noqa: F401 - re-exported


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Content(Base):
    """One distinct file content, classified once."""

    __tablename__ = "contents"
    # Stored in key order on SQLite (WITHOUT ROWID, migration 7): a content is one
    # step down its key.
    __table_args__ = {"sqlite_with_rowid": False}

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | done | failed
    error: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(80))
    classified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # From the photo's EXIF (migration 3). taken_at is the camera's local time as
    # ISO text (EXIF has no zone), so --since 2024-06 is a plain string comparison.
    taken_at: Mapped[str | None] = mapped_column(String(32), index=True)
    camera: Mapped[str | None] = mapped_column(String(200))
    gps_lat: Mapped[float | None] = mapped_column(Float)
    gps_lon: Mapped[float | None] = mapped_column(Float)

    predictions: Mapped[list[Prediction]] = relationship(
        back_populates="content", order_by="Prediction.rank", cascade="all, delete-orphan"
    )
    tags: Mapped[list[Tag]] = relationship(
        back_populates="content", order_by="Tag.tag", cascade="all, delete-orphan"
    )


class TrackedPath(Base):
    """A file path in a watched folder, pointing at the content last read there."""

    __tablename__ = "paths"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    sha256: Mapped[str | None] = mapped_column(ForeignKey("contents.sha256"))
    size: Mapped[int | None] = mapped_column(BigInteger)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    missing: Mapped[bool] = mapped_column(Boolean, default=False)

    content: Mapped[Content | None] = relationship()

    # A content's present paths, read from the index alone (migration 5); on SQLite
    # it carries the path too, (sha256, missing, path) (migration 7; PostgreSQL's
    # B-tree entries cannot hold every path).
    __table_args__ = (Index("ix_paths_sha256_missing", "sha256", "missing"),)


class Prediction(Base):
    """One of the top-3 predictions of a model for a content."""

    __tablename__ = "predictions"

    sha256: Mapped[str] = mapped_column(
        ForeignKey("contents.sha256", ondelete="CASCADE"), primary_key=True
    )
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(80))
    class_index: Mapped[int] = mapped_column(Integer)
    wnid: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(Text)
    score: Mapped[float] = mapped_column(Float)

    content: Mapped[Content] = relationship(back_populates="predictions")

    # Search's best score per content (migration 6), and each content's first label
    # (migration 5). On SQLite the rows are stored in key order (WITHOUT ROWID,
    # migration 7): a content's labels are one step down the key.
    __table_args__ = (Index("ix_predictions_search", "class_index", "score", "sha256"),
                      Index("ix_predictions_first", "sha256", "label", "rank",
                            sqlite_where=text("rank = 1"), postgresql_where=text("rank = 1")),
                      {"sqlite_with_rowid": False})


class Tag(Base):
    """A user tag on a content. `tag_key` is the case-folded form used for matching."""

    __tablename__ = "tags"
    # Stored in key order on SQLite (WITHOUT ROWID, migration 7): a content's tags are
    # one step down the key and a range.

    sha256: Mapped[str] = mapped_column(
        ForeignKey("contents.sha256", ondelete="CASCADE"), primary_key=True
    )
    tag_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    tag: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Read from the keywords the photo carried (migration 3), not given with `labels tag`.
    imported: Mapped[bool] = mapped_column(Boolean, default=False)

    content: Mapped[Content] = relationship(back_populates="tags")

    __table_args__ = (Index("ix_tags_tag_key", "tag_key"), {"sqlite_with_rowid": False})


class Judgement(Base):
    """What a person said of one label of a content (migration 8): it is wrong
    (`rejected`: no reader shows or finds it, relabelling never brings it back) or
    right (`confirmed`: it sorts first and is kept through relabelling). One per
    (content, class); `source` says where it was given: cli, xmp (a sidecar's
    suppressed keyword), web. Owned by store/judgements.py."""

    __tablename__ = "judgements"

    sha256: Mapped[str] = mapped_column(
        ForeignKey("contents.sha256", ondelete="CASCADE"), primary_key=True
    )
    class_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    wnid: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(Text)
    verdict: Mapped[str] = mapped_column(String(16))  # rejected | confirmed
    source: Mapped[str] = mapped_column(String(8))  # cli | xmp | web
    judged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    # Search asks which of its classes' contents were judged: (class, content) from
    # the index alone. On SQLite stored in key order (WITHOUT ROWID): a content's
    # judgements are one step and a range.
    __table_args__ = (Index("ix_judgements_class", "class_index", "sha256"),
                      {"sqlite_with_rowid": False})


class EmbeddingSpace(Base):
    """A model and stored form that made vectors (migration 9; store/embeddings.py):
    vectors of two spaces are never compared."""

    __tablename__ = "embedding_spaces"
    __table_args__ = (UniqueConstraint("model", "codec", name="uq_embedding_spaces"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(80))
    codec: Mapped[str] = mapped_column(String(40))
    token: Mapped[str] = mapped_column(String(32))  # random: a vector file of another database never matches
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Embedding(Base):
    """A content's vector (labelsd.vectors.codec), in the order written (`id`)."""

    __tablename__ = "embeddings"
    __table_args__ = (UniqueConstraint("sha256", name="uq_embeddings_sha256"),
                      Index("ix_embeddings_space", "space", "id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    sha256: Mapped[str] = mapped_column(ForeignKey("contents.sha256", ondelete="CASCADE"))
    space: Mapped[int] = mapped_column(ForeignKey("embedding_spaces.id"))
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class QueueItem(Base):
    """A path waiting to be read and classified (durable: survives crashes)."""

    __tablename__ = "queue"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    state: Mapped[str] = mapped_column(String(16), default="queued")  # queued | failed
    enqueued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_queue_queued", "id", sqlite_where=text("state = 'queued'"),
                            postgresql_where=text("state = 'queued'")),)


class Node(Base):
    """A running (or once running) labelsd service and its heartbeat."""

    __tablename__ = "nodes"

    node_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    model: Mapped[str | None] = mapped_column(String(80))
    device: Mapped[str | None] = mapped_column(String(200))
    watching: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of roots
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    done: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
