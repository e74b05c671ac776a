"""The `webhook_events` table: the append-only log of every verified delivery."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, BigId, JsonDocument, UTCDateTime
from app.core.text import ID_MAX_LENGTH
from app.recordings.lifecycle import Outcome

WEBHOOK_TYPE_MAX_LENGTH = 255


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

    __table_args__ = (
        CheckConstraint(
            "outcome IN (" + ", ".join(repr(o.value) for o in Outcome) + ")", name="outcome"
        ),
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
