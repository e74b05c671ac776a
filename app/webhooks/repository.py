"""Appends to and reads from the webhook event log. Callers own the transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.recordings.lifecycle import Outcome, TrackEvent
from app.recordings.repository import TrackKey
from app.webhooks.models import WebhookEvent


@dataclass(frozen=True, slots=True)
class EventIdentity:
    """The ids a delivery names, as far as they are usable strings."""

    meeting_id: str | None = None
    session_id: str | None = None
    participant_id: str | None = None
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class TrackDelivery:
    """A validated track webhook as every write path takes it: whose track, what event,
    and what goes into the log row."""

    key: TrackKey
    event: TrackEvent
    identity: EventIdentity
    meeting_id: str
    webhook_type: str
    payload: dict[str, Any]


async def append(
    session: AsyncSession,
    *,
    received_at: datetime,
    webhook_type: str,
    identity: EventIdentity,
    outcome: Outcome,
    fingerprint: str,
    payload: dict[str, Any],
    recording_id: int | None = None,
    error: list[dict[str, str]] | None = None,
) -> int:
    statement = (
        insert(WebhookEvent)
        .values(
            received_at=received_at,
            webhook_type=webhook_type,
            meeting_id=identity.meeting_id,
            session_id=identity.session_id,
            participant_id=identity.participant_id,
            kind=identity.kind,
            outcome=outcome.value,
            fingerprint=fingerprint,
            recording_id=recording_id,
            payload=payload,
            error=error,
        )
        .returning(WebhookEvent.id)
    )
    return (await session.execute(statement)).scalar_one()


async def timeline(session: AsyncSession, recording_id: int) -> Sequence[RowMapping]:
    statement = (
        select(
            WebhookEvent.id,
            WebhookEvent.webhook_type,
            WebhookEvent.received_at,
            WebhookEvent.outcome,
        )
        .where(WebhookEvent.recording_id == recording_id)
        .order_by(WebhookEvent.id)
    )
    return (await session.execute(statement)).mappings().all()


@dataclass(frozen=True, slots=True)
class EventFilter:
    session_id: str | None = None
    webhook_types: Sequence[str] = ()
    outcomes: Sequence[str] = ()


async def list_page(
    session: AsyncSession, filters: EventFilter, limit: int, before_id: int | None
) -> Sequence[RowMapping]:
    """Newest first; `before_id` is the id of the previous page's last event."""
    statement = select(WebhookEvent.__table__)
    if filters.session_id is not None:
        statement = statement.where(WebhookEvent.session_id == filters.session_id)
    if filters.webhook_types:
        statement = statement.where(WebhookEvent.webhook_type.in_(filters.webhook_types))
    if filters.outcomes:
        statement = statement.where(WebhookEvent.outcome.in_(filters.outcomes))
    if before_id is not None:
        statement = statement.where(WebhookEvent.id < before_id)
    statement = statement.order_by(WebhookEvent.id.desc()).limit(limit)
    return (await session.execute(statement)).mappings().all()


async def all_in_order(session: AsyncSession) -> list[WebhookEvent]:
    """The whole log in the order it was written (for rebuilds)."""
    return list(await session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))


async def stream_with_outcomes(
    session: AsyncSession, outcomes: Sequence[Outcome], batch: int = 1000
) -> AsyncIterator[WebhookEvent]:
    """The log in id order (the order events were applied), restricted to `outcomes` and
    fetched `batch` rows at a time (a server-side cursor on PostgreSQL)."""
    statement = (
        select(WebhookEvent)
        .where(WebhookEvent.outcome.in_([outcome.value for outcome in outcomes]))
        .order_by(WebhookEvent.id)
        .execution_options(yield_per=batch)
    )
    async for row in await session.stream_scalars(statement):
        yield row


async def link_recording(session: AsyncSession, event_id: int, recording_id: int) -> None:
    """Point an event at the recording it belongs to (rebuild repair; nothing else changes)."""
    await session.execute(
        update(WebhookEvent).where(WebhookEvent.id == event_id).values(recording_id=recording_id)
    )
