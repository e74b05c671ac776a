"""The `recordings` table: one row per start-to-stop run of a (session, participant, kind)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, BigId, JsonDocument, UTCDateTime
from app.core.text import ID_MAX_LENGTH
from app.recordings.lifecycle import Status

KINDS = ("audio", "video", "screen_audio", "screen_video")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


class Recording(Base):
    __tablename__ = "recordings"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    meeting_id: Mapped[str] = mapped_column(String(ID_MAX_LENGTH))
    session_id: Mapped[str] = mapped_column(String(ID_MAX_LENGTH))
    participant_id: Mapped[str] = mapped_column(String(ID_MAX_LENGTH))
    kind: Mapped[str] = mapped_column(String(16))
    sequence: Mapped[int] = mapped_column(Integer)
    # Exactly one row per key has is_latest: it is the row writers lock, and a partial
    # unique index makes a second "first recording" impossible under concurrency.
    is_latest: Mapped[bool] = mapped_column(Boolean)
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
    # Bumped by every write, so a writer that decided on a stale read can tell.
    version: Mapped[int] = mapped_column(Integer)

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
    )
