"""Reads and writes of the recordings table. Callers own the transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Integer, bindparam, delete, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import BigId, UTCDateTime
from app.core.reader import Query, Reader, Row
from app.recordings.lifecycle import RecordingState, Status
from app.recordings.models import Recording
from app.webhooks.models import WebhookEvent

TIMESTAMP_COLUMNS: dict[Status, str] = {status: f"{status.value}_at" for status in Status}


@dataclass(frozen=True, slots=True)
class TrackKey:
    session_id: str
    participant_id: str
    kind: str


def state_from_row(row: Recording) -> RecordingState:
    received = {
        status: stamp
        for status, column in TIMESTAMP_COLUMNS.items()
        if (stamp := getattr(row, column)) is not None
    }
    return RecordingState(
        sequence=row.sequence,
        status=Status(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        received=received,
        files=tuple(row.files),
        fingerprints=tuple(row.event_fingerprints),
    )


def _state_columns(state: RecordingState) -> dict[str, Any]:
    columns: dict[str, Any] = {
        column: state.received.get(status) for status, column in TIMESTAMP_COLUMNS.items()
    }
    columns.update(
        status=state.status.value,
        sequence=state.sequence,
        created_at=state.created_at,
        updated_at=state.updated_at,
        files=[dict(entry) for entry in state.files],
        event_fingerprints=list(state.fingerprints),
    )
    return columns


def _key_filter(key: TrackKey) -> tuple[Any, ...]:
    return (
        Recording.session_id == key.session_id,
        Recording.participant_id == key.participant_id,
        Recording.kind == key.kind,
    )


async def lock_latest(session: AsyncSession, key: TrackKey) -> Recording | None:
    """The key's latest recording, row-locked until the transaction ends (SQLite: BEGIN
    IMMEDIATE already serialises writers)."""
    statement = select(Recording).where(*_key_filter(key), Recording.is_latest).with_for_update()
    result = await session.execute(statement.execution_options(populate_existing=True))
    return result.scalar_one_or_none()


async def insert_first(
    session: AsyncSession, key: TrackKey, meeting_id: str, state: RecordingState
) -> int | None:
    """Create the key's first recording; None if a concurrent delivery created it first."""
    dialect = session.get_bind().dialect.name
    builder = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        builder(Recording)
        .values(_new_row(key, meeting_id, state))
        .on_conflict_do_nothing()
        .returning(Recording.id)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def insert_next(session: AsyncSession, latest: Recording, state: RecordingState) -> int:
    """Open the next recording of a key whose latest row we hold locked."""
    await session.execute(
        update(Recording)
        .where(Recording.id == latest.id)
        .values(is_latest=False, version=Recording.version + 1)
    )
    key = TrackKey(latest.session_id, latest.participant_id, latest.kind)
    statement = (
        insert(Recording).values(_new_row(key, latest.meeting_id, state)).returning(Recording.id)
    )
    return (await session.execute(statement)).scalar_one()


async def save_state(session: AsyncSession, recording_id: int, state: RecordingState) -> None:
    await session.execute(
        update(Recording)
        .where(Recording.id == recording_id)
        .values({**_state_columns(state), "version": Recording.version + 1})
    )


def _new_row(key: TrackKey, meeting_id: str, state: RecordingState) -> dict[str, Any]:
    return {
        "meeting_id": meeting_id,
        "session_id": key.session_id,
        "participant_id": key.participant_id,
        "kind": key.kind,
        "is_latest": True,
        "version": 1,
        **_state_columns(state),
    }


@dataclass(frozen=True, slots=True)
class RecordingFilter:
    meeting_id: str | None = None
    session_id: str | None = None
    participant_id: str | None = None
    kind: str | None = None
    statuses: Sequence[str] = ()
    updated_after: datetime | None = None


# The query API reads rows, not ORM objects: nothing is tracked, and no per-row objects;
# and only the columns it shows (the fingerprints list is JSON to decode for nothing).
_RECORDINGS = Recording.__table__
_SHOWN = [c for c in _RECORDINGS.c if c.name not in {"event_fingerprints", "is_latest", "version"}]
_EQUALITY_FILTERS = ("meeting_id", "session_id", "participant_id", "kind")

_EVENTS = WebhookEvent.__table__

# A recording and its timeline in one round trip: one row per event (the recording's
# columns repeated), or one row with NULL event columns for a recording without events.
# The events come from the covering ix_webhook_events_recording_timeline.
GET_WITH_TIMELINE = Query(
    select(
        *_SHOWN,
        _EVENTS.c.id.label("event_id"),
        _EVENTS.c.webhook_type.label("event_webhook_type"),
        _EVENTS.c.received_at.label("event_received_at"),
        _EVENTS.c.outcome.label("event_outcome"),
    )
    .select_from(_RECORDINGS.outerjoin(_EVENTS, _EVENTS.c.recording_id == _RECORDINGS.c.id))
    .where(_RECORDINGS.c.id == bindparam("id", type_=BigId))
    .order_by(_EVENTS.c.id)
)


async def get_with_timeline(reader: Reader, recording_id: int) -> Sequence[Row]:
    """The recording's rows, one per event in log order; empty if there is no such id."""
    return await reader.rows(GET_WITH_TIMELINE, {"id": recording_id})


@lru_cache(maxsize=256)
def _page_query(equal: tuple[str, ...], statuses: int, updated_after: bool, after: bool) -> Query:
    """One statement per combination of filters, built and compiled once."""
    statement = select(*_SHOWN)
    for name in equal:
        statement = statement.where(_RECORDINGS.c[name] == bindparam(name))
    if statuses:
        statement = statement.where(
            _RECORDINGS.c.status.in_([bindparam(f"status_{i}") for i in range(statuses)])
        )
    if updated_after:
        statement = statement.where(
            _RECORDINGS.c.updated_at > bindparam("updated_after", type_=UTCDateTime())
        )
    if after:
        statement = statement.where(
            tuple_(_RECORDINGS.c.updated_at, _RECORDINGS.c.id)
            < tuple_(
                bindparam("after_updated_at", type_=UTCDateTime()),
                bindparam("after_id", type_=BigId),
            )
        )
    statement = statement.order_by(_RECORDINGS.c.updated_at.desc(), _RECORDINGS.c.id.desc())
    return Query(statement.limit(bindparam("limit", type_=Integer())))


async def list_page(
    reader: Reader,
    filters: RecordingFilter,
    limit: int,
    after: tuple[datetime, int] | None,
) -> Sequence[Row]:
    """Newest updated_at first; `after` is the (updated_at, id) of the previous page's last."""
    params: dict[str, Any] = {"limit": limit}
    for name in _EQUALITY_FILTERS:
        value = getattr(filters, name)
        if value is not None:
            params[name] = value
    statuses = sorted(set(filters.statuses))
    params.update({f"status_{i}": status for i, status in enumerate(statuses)})
    if filters.updated_after is not None:
        params["updated_after"] = filters.updated_after
    if after is not None:
        params["after_updated_at"], params["after_id"] = after
    query = _page_query(
        tuple(name for name in _EQUALITY_FILTERS if name in params),
        len(statuses),
        filters.updated_after is not None,
        after is not None,
    )
    return await reader.rows(query, params)


# Rebuild: read every row in batches, and rewrite rows from the fold.


async def stream_all(session: AsyncSession, batch: int = 1000) -> AsyncIterator[Recording]:
    """Every recording in id order, fetched `batch` rows at a time (a server-side cursor on
    PostgreSQL), so a rebuild never holds the whole result set at once."""
    statement = select(Recording).order_by(Recording.id).execution_options(yield_per=batch)
    async for row in await session.stream_scalars(statement):
        yield row


async def clear_latest(session: AsyncSession, key: TrackKey) -> None:
    await session.execute(
        update(Recording)
        .where(*_key_filter(key), Recording.is_latest)
        .values(is_latest=False, version=Recording.version + 1)
    )


async def rewrite(
    session: AsyncSession,
    recording_id: int,
    meeting_id: str,
    state: RecordingState,
    is_latest: bool,
) -> None:
    """Overwrite a row's state, meeting id and latest flag (its key stays)."""
    values = {
        **_state_columns(state),
        "meeting_id": meeting_id,
        "is_latest": is_latest,
        "version": Recording.version + 1,
    }
    await session.execute(update(Recording).where(Recording.id == recording_id).values(values))


async def insert_state(
    session: AsyncSession, key: TrackKey, meeting_id: str, state: RecordingState, is_latest: bool
) -> int:
    row = {**_new_row(key, meeting_id, state), "is_latest": is_latest}
    statement = insert(Recording).values(row).returning(Recording.id)
    return (await session.execute(statement)).scalar_one()


async def delete_many(session: AsyncSession, recording_ids: Sequence[int]) -> None:
    if recording_ids:
        await session.execute(delete(Recording).where(Recording.id.in_(recording_ids)))
