"""Appends to and reads from the webhook event log. Callers own the transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Integer, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import BigId
from app.core.reader import Query, Reader, Row
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


_EVENTS = WebhookEvent.__table__


@dataclass(frozen=True, slots=True)
class EventFilter:
    session_id: str | None = None
    webhook_types: Sequence[str] = ()
    outcomes: Sequence[str] = ()


@lru_cache(maxsize=256)
def _page_query(session_id: bool, webhook_types: int, outcomes: int, before: bool) -> Query:
    """One statement per combination of filters, built and compiled once."""
    statement = select(_EVENTS)
    if session_id:
        statement = statement.where(_EVENTS.c.session_id == bindparam("session_id"))
    if webhook_types:
        statement = statement.where(
            _EVENTS.c.webhook_type.in_([bindparam(f"type_{i}") for i in range(webhook_types)])
        )
    if outcomes:
        statement = statement.where(
            _EVENTS.c.outcome.in_([bindparam(f"outcome_{i}") for i in range(outcomes)])
        )
    if before:
        statement = statement.where(_EVENTS.c.id < bindparam("before_id", type_=BigId))
    statement = statement.order_by(_EVENTS.c.id.desc())
    return Query(statement.limit(bindparam("limit", type_=Integer())))


async def list_page(
    reader: Reader, filters: EventFilter, limit: int, before_id: int | None
) -> Sequence[Row]:
    """Newest first; `before_id` is the id of the previous page's last event."""
    types = sorted(set(filters.webhook_types))
    outcomes = sorted(set(filters.outcomes))
    params: dict[str, Any] = {"limit": limit}
    if filters.session_id is not None:
        params["session_id"] = filters.session_id
    params.update({f"type_{i}": value for i, value in enumerate(types)})
    params.update({f"outcome_{i}": value for i, value in enumerate(outcomes)})
    if before_id is not None:
        params["before_id"] = before_id
    query = _page_query(
        filters.session_id is not None, len(types), len(outcomes), before_id is not None
    )
    return await reader.rows(query, params)


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
