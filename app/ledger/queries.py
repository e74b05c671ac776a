"""The query API's reads: pages of recordings and of the log, and one recording with its
timeline. Each statement is built once per filter shape, with bind parameters only, and
returns typed rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Generic, TypeVar

from sqlalchemy import Integer, Select, bindparam, or_, select, text, tuple_, union_all

from app.ledger.reader import Query, Reader
from app.ledger.rows import (
    EVENT_ROW_COLUMNS,
    RECORDING_ROW_COLUMNS,
    TIMELINE_ROW_COLUMNS,
    EventRow,
    RecordingRow,
    RecordingWithTimeline,
    TimelineRow,
)
from app.ledger.tables import EVENTS, OPEN_RUNS, RECORDINGS, BigId, UTCDateTime

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    more: bool  # another page follows the last item


async def _page(reader: Reader, query: Query, params: dict[str, Any], limit: int) -> list[Any]:
    """One more row than asked for, to tell whether another page follows."""
    return list(await reader.rows(query, {**params, "limit": limit + 1}))


def _paged(rows: list[Any], limit: int, row_type: type[T]) -> Page[T]:
    return Page([row_type(*row) for row in rows[:limit]], more=len(rows) > limit)


# Recordings


@dataclass(frozen=True, slots=True)
class RecordingFilter:
    meeting_id: str | None = None
    session_id: str | None = None
    participant_id: str | None = None
    kind: str | None = None
    statuses: Sequence[str] = ()
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    # Stuck (True) or not stuck (False) as of `stuck_before`; see lifecycle.is_stuck.
    stuck: bool | None = None
    stuck_before: datetime | None = None


_EQUALITY_FILTERS = ("meeting_id", "session_id", "participant_id", "kind")


def _newest_first(branches: list[Select[Any]], *order: Any) -> Select[Any]:
    """One ordered page out of several branches, each an index range read in the page's
    order and cut at the page size: a filter with several values (`IN`) would otherwise
    read and sort every matching row before it could cut the page (hundreds of thousands
    on a large log), where each value's own index range gives its newest rows at once."""
    if len(branches) == 1:
        return branches[0]
    union = union_all(
        *(select(branch.subquery(f"b{i}")) for i, branch in enumerate(branches))
    ).subquery("page")
    return (
        select(*union.c)
        .order_by(*(union.c[column.name].desc() for column in order))
        .limit(bindparam("limit", type_=Integer()))
    )


@lru_cache(maxsize=256)
def _recordings_query(
    equal: tuple[str, ...],
    statuses: int,
    updated_after: bool,
    after: bool,
    updated_before: bool = False,
    stuck: bool | None = None,
) -> Query:
    """One statement per combination of filters, built and compiled once."""
    stuck_before = bindparam("stuck_before", type_=UTCDateTime())

    def branch(status: int | None) -> Select[Any]:
        statement = select(*RECORDING_ROW_COLUMNS)
        if stuck is True:  # in the very words of ix_recordings_open_updated's predicate
            statement = statement.where(text(OPEN_RUNS), RECORDINGS.c.updated_at < stuck_before)
        elif stuck is False:
            statement = statement.where(
                or_(text(f"NOT ({OPEN_RUNS})"), RECORDINGS.c.updated_at >= stuck_before)
            )
        if updated_before:
            statement = statement.where(
                RECORDINGS.c.updated_at < bindparam("updated_before", type_=UTCDateTime())
            )
        for name in equal:
            statement = statement.where(RECORDINGS.c[name] == bindparam(name))
        if status is not None:
            statement = statement.where(RECORDINGS.c.status == bindparam(f"status_{status}"))
        elif statuses:
            statement = statement.where(
                RECORDINGS.c.status.in_([bindparam(f"status_{i}") for i in range(statuses)])
            )
        if updated_after:
            statement = statement.where(
                RECORDINGS.c.updated_at > bindparam("updated_after", type_=UTCDateTime())
            )
        if after:
            statement = statement.where(
                tuple_(RECORDINGS.c.updated_at, RECORDINGS.c.id)
                < tuple_(
                    bindparam("after_updated_at", type_=UTCDateTime()),
                    bindparam("after_id", type_=BigId),
                )
            )
        return statement.order_by(RECORDINGS.c.updated_at.desc(), RECORDINGS.c.id.desc()).limit(
            bindparam("limit", type_=Integer())
        )

    # With an equality filter its own index already narrows the rows to a few; otherwise
    # each status is read on its own range of ix_recordings_status_updated.
    per_status = statuses > 1 and not equal
    branches = [branch(i) for i in range(statuses)] if per_status else [branch(None)]
    return Query(_newest_first(branches, RECORDINGS.c.updated_at, RECORDINGS.c.id))


async def list_recordings(
    reader: Reader,
    filters: RecordingFilter,
    limit: int,
    after: tuple[datetime, int] | None,
) -> Page[RecordingRow]:
    """Newest updated_at first; `after` is the (updated_at, id) of the previous page's last."""
    params: dict[str, Any] = {}
    for name in _EQUALITY_FILTERS:
        value = getattr(filters, name)
        if value is not None:
            params[name] = value
    statuses = sorted(set(filters.statuses))
    params.update({f"status_{i}": status for i, status in enumerate(statuses)})
    if filters.updated_after is not None:
        params["updated_after"] = filters.updated_after
    if filters.updated_before is not None:
        params["updated_before"] = filters.updated_before
    if filters.stuck is not None:
        assert filters.stuck_before is not None
        params["stuck_before"] = filters.stuck_before
    if after is not None:
        params["after_updated_at"], params["after_id"] = after
    query = _recordings_query(
        tuple(name for name in _EQUALITY_FILTERS if name in params),
        len(statuses),
        filters.updated_after is not None,
        after is not None,
        filters.updated_before is not None,
        filters.stuck,
    )
    return _paged(await _page(reader, query, params, limit), limit, RecordingRow)


# A recording and its timeline in one round trip: one row per event (the recording's
# columns repeated), or one row with NULL event columns for a recording without events.
# The events come from the covering ix_webhook_events_recording_timeline.
_WITH_TIMELINE = Query(
    select(*RECORDING_ROW_COLUMNS, *TIMELINE_ROW_COLUMNS)
    .select_from(RECORDINGS.outerjoin(EVENTS, EVENTS.c.recording_id == RECORDINGS.c.id))
    .where(RECORDINGS.c.id == bindparam("id", type_=BigId))
    .order_by(EVENTS.c.id)
)
_RECORDING_WIDTH = len(RECORDING_ROW_COLUMNS)


async def get_recording(reader: Reader, recording_id: int) -> RecordingWithTimeline | None:
    """The recording and its events in log order; None if there is no such id."""
    rows = await reader.rows(_WITH_TIMELINE, {"id": recording_id})
    if not rows:
        return None
    return RecordingWithTimeline(
        RecordingRow(*rows[0][:_RECORDING_WIDTH]),
        [TimelineRow(*row[_RECORDING_WIDTH:]) for row in rows if row[_RECORDING_WIDTH] is not None],
    )


# The log


@dataclass(frozen=True, slots=True)
class EventFilter:
    session_id: str | None = None
    webhook_types: Sequence[str] = ()
    outcomes: Sequence[str] = ()


@lru_cache(maxsize=256)
def _events_query(session_id: bool, webhook_types: int, outcomes: int, before: bool) -> Query:
    """One statement per combination of filters, built and compiled once."""

    def branch(type_index: int | None, outcome_index: int | None) -> Select[Any]:
        statement = select(*EVENT_ROW_COLUMNS)
        if session_id:
            statement = statement.where(EVENTS.c.session_id == bindparam("session_id"))
        if type_index is not None:
            statement = statement.where(EVENTS.c.webhook_type == bindparam(f"type_{type_index}"))
        elif webhook_types:
            statement = statement.where(
                EVENTS.c.webhook_type.in_([bindparam(f"type_{i}") for i in range(webhook_types)])
            )
        if outcome_index is not None:
            statement = statement.where(EVENTS.c.outcome == bindparam(f"outcome_{outcome_index}"))
        elif outcomes:
            statement = statement.where(
                EVENTS.c.outcome.in_([bindparam(f"outcome_{i}") for i in range(outcomes)])
            )
        if before:
            statement = statement.where(EVENTS.c.id < bindparam("before_id", type_=BigId))
        return statement.order_by(EVENTS.c.id.desc()).limit(bindparam("limit", type_=Integer()))

    # A session's events are few (ix_webhook_events_session_id); otherwise each type (or,
    # without types, each outcome) is read on its own index range, newest first.
    if not session_id and webhook_types > 1:
        branches = [branch(i, None) for i in range(webhook_types)]
    elif not session_id and not webhook_types and outcomes > 1:
        branches = [branch(None, i) for i in range(outcomes)]
    else:
        branches = [branch(None, None)]
    return Query(_newest_first(branches, EVENTS.c.id))


async def list_events(
    reader: Reader, filters: EventFilter, limit: int, before_id: int | None
) -> Page[EventRow]:
    """Newest first; `before_id` is the id of the previous page's last event."""
    types = sorted(set(filters.webhook_types))
    outcomes = sorted(set(filters.outcomes))
    params: dict[str, Any] = {}
    if filters.session_id is not None:
        params["session_id"] = filters.session_id
    params.update({f"type_{i}": value for i, value in enumerate(types)})
    params.update({f"outcome_{i}": value for i, value in enumerate(outcomes)})
    if before_id is not None:
        params["before_id"] = before_id
    query = _events_query(
        filters.session_id is not None, len(types), len(outcomes), before_id is not None
    )
    return _paged(await _page(reader, query, params, limit), limit, EventRow)
