"""The ledger's two tables, and the column types they share.

`recordings` holds one row per start-to-stop run of a track; `webhook_events` is the
append-only log of every verified delivery. The schema is created only by the Alembic
migrations in `migrations/`; these definitions are what they must match.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import JSON, TypeDecorator

from app.core.text import ID_MAX_LENGTH
from app.rules.lifecycle import KINDS, OPEN_STATUSES, Outcome, Status
from app.videosdk.schemas import WEBHOOK_TYPE_MAX_LENGTH

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# SQLite only auto-increments an INTEGER PRIMARY KEY, PostgreSQL gets a 64-bit identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# PostgreSQL `json` (not `jsonb`) keeps what VideoSDK sent as it was, including the
# `\u0000` escapes that `jsonb` refuses; we never query inside the documents.
JsonDocument = JSON()


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


# The runs still open, as SQL: a partial index's predicate, and the very same text in the
# queries that must use it (the planner proves the index applies only from that text).
OPEN_RUNS = _in("status", tuple(s.value for s in Status if s in OPEN_STATUSES))


class StateColumns:
    """The columns a recording's lifecycle state is stored in: `recordings` has them, and
    `recording_baselines` the same, by the same names and types."""

    meeting_id: Mapped[str] = mapped_column(String(ID_MAX_LENGTH))
    sequence: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    starting_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stopping_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    files: Mapped[list[dict[str, Any]]] = mapped_column(JsonDocument)
    # Fingerprints of the events this recording holds, to tell an exact repeat.
    event_fingerprints: Mapped[list[str]] = mapped_column(JsonDocument)


class Recording(StateColumns, Base):
    __tablename__ = "recordings"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(ID_MAX_LENGTH))
    participant_id: Mapped[str] = mapped_column(String(ID_MAX_LENGTH))
    kind: Mapped[str] = mapped_column(String(16))
    # Exactly one row per key has is_latest: it is the row writers lock, and a partial
    # unique index makes a second "first recording" impossible under concurrency.
    is_latest: Mapped[bool] = mapped_column(Boolean)
    # Grows by one with every event applied to the recording (and with a rebuild's repair):
    # a writer that decided on a stale read can tell, and so can a consumer of the feed.
    version: Mapped[int] = mapped_column(Integer)
    # The transaction that last changed the recording, the change feed's order: PostgreSQL's
    # pg_current_xact_id(), SQLite's feed_clock. See ledger/feed.py.
    change_txn: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint("session_id", "participant_id", "kind", "sequence"),
        CheckConstraint(_in("status", tuple(Status)), name="status"),
        CheckConstraint(_in("kind", KINDS), name="kind"),
        CheckConstraint("sequence >= 1", name="sequence_positive"),
        Index(
            "uq_recordings_latest_per_key",
            "session_id",
            "participant_id",
            "kind",
            unique=True,
            postgresql_where=text("is_latest"),
            sqlite_where=text("is_latest"),
        ),
        # Listing is newest updated_at first with keyset paging on (updated_at, id);
        # one index per selective filter keeps every filtered page an index range scan
        # (`kind` has four values: `?kind=` alone walks ix_recordings_updated).
        Index("ix_recordings_updated", "updated_at", "id"),
        Index("ix_recordings_meeting_updated", "meeting_id", "updated_at", "id"),
        Index("ix_recordings_session_updated", "session_id", "updated_at", "id"),
        Index("ix_recordings_participant_updated", "participant_id", "updated_at", "id"),
        Index("ix_recordings_status_updated", "status", "updated_at", "id"),
        Index("ix_recordings_change", "change_txn", "id"),
        # Open runs, newest first: the stuck ones are its old end (the list and the gauge
        # read a few index pages, however many finished recordings there are).
        Index(
            "ix_recordings_open_updated",
            "updated_at",
            "id",
            postgresql_where=text(OPEN_RUNS),
            sqlite_where=text(OPEN_RUNS),
        ),
    )


class RecordingBaseline(StateColumns, Base):
    """Where rebuild resumes a recording whose events `trackhook prune` removed: its state as
    those events left it (StateColumns, the columns `recordings` has too). A
    recording with a baseline can never be deleted (the foreign key), so a rebuild that
    knows nothing of baselines (a release before migration 0006) fails its repair instead
    of deleting the recording."""

    __tablename__ = "recording_baselines"

    recording_id: Mapped[int] = mapped_column(
        BigId,
        ForeignKey("recordings.id", ondelete="RESTRICT"),
        primary_key=True,
        autoincrement=False,
    )
    # How many of the recording's events were removed, over every prune, and the last time.
    events_pruned: Mapped[int] = mapped_column(Integer)
    pruned_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookEvent(Base):
    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    webhook_type: Mapped[str] = mapped_column(String(WEBHOOK_TYPE_MAX_LENGTH))
    meeting_id: Mapped[str | None] = mapped_column(String(ID_MAX_LENGTH))
    session_id: Mapped[str | None] = mapped_column(String(ID_MAX_LENGTH))
    participant_id: Mapped[str | None] = mapped_column(String(ID_MAX_LENGTH))
    kind: Mapped[str | None] = mapped_column(String(ID_MAX_LENGTH))
    outcome: Mapped[str] = mapped_column(String(16))
    # sha256 of the canonical payload; equal fingerprints are exact repeats.
    fingerprint: Mapped[str] = mapped_column(String(64))
    recording_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("recordings.id", ondelete="RESTRICT")
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    error: Mapped[list[dict[str, Any]] | None] = mapped_column(JsonDocument)
    # The body exactly as received and the signature header with it: an audit trail whose
    # signatures can be checked again (`trackhook verify-log`). NULL before migration 0004.
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    signature: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint(_in("outcome", tuple(Outcome)), name="outcome"),
        Index("ix_webhook_events_session_id", "session_id", "id"),
        Index("ix_webhook_events_webhook_type", "webhook_type", "id"),
        Index("ix_webhook_events_outcome", "outcome", "id"),
        # Covering: a recording's timeline is read from the index alone (PostgreSQL).
        Index(
            "ix_webhook_events_recording_timeline",
            "recording_id",
            "id",
            postgresql_include=["webhook_type", "received_at", "outcome"],
        ),
    )


class FeedClock(Base):
    """SQLite's count of write transactions (PostgreSQL numbers its transactions itself)."""

    __tablename__ = "feed_clock"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    txn: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


# The tables themselves, for Core statements (the declarative classes type them loosely).
RECORDINGS = cast(Table, Recording.__table__)
EVENTS = cast(Table, WebhookEvent.__table__)
FEED_CLOCK = cast(Table, FeedClock.__table__)
BASELINES = cast(Table, RecordingBaseline.__table__)
