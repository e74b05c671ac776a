"""The change feed: recordings in the order of their latest change, with a position that
never lets a consumer skip a change, whatever order concurrent transactions commit in.

Each recording carries `change_txn`, the number of the transaction that last changed it
(ledger/clock.py); the feed's order is (change_txn, id). A number taken during a
transaction is not commit order: a transaction that started earlier can commit later. So a
read serves only the changes below its *horizon*: on PostgreSQL the oldest transaction
still in progress when the read starts (`pg_snapshot_xmin(pg_current_snapshot())`); every
transaction numbered below it has finished, so every change below it is visible, and any
change still to commit is numbered at or above it. A position never passes the horizon,
so nothing behind a position can appear later: an in-flight transaction holds the feed
back, it never makes it skip. On SQLite writers are serialised and the counter is commit
order: the horizon is the counter's next value.

A filtered read looks at no more than SCAN_BUDGET changes past its position (an index-only
walk of ix_recordings_change), so a selective filter over an old position costs a bounded
amount; its next position is then the last change it looked at, matching or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    Select,
    bindparam,
    func,
    literal,
    literal_column,
    null,
    select,
    true,
    tuple_,
)
from sqlalchemy.sql.elements import ColumnElement

from app.ledger.reader import Query, Reader
from app.ledger.rows import RECORDING_ROW_COLUMNS, RecordingRow
from app.ledger.tables import FEED_CLOCK, RECORDINGS

SCAN_BUDGET = 1000


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in the feed: every change up to and including (txn, id) is behind it."""

    txn: int
    id: int


BEGINNING = Position(0, 0)  # before every change (migrated rows have change_txn 0)


@dataclass(frozen=True, slots=True)
class ChangeFilter:
    meeting_id: str | None = None
    session_id: str | None = None
    participant_id: str | None = None
    kind: str | None = None
    statuses: frozenset[str] = field(default_factory=frozenset)

    @property
    def equalities(self) -> dict[str, str]:
        named = {
            "meeting_id": self.meeting_id,
            "session_id": self.session_id,
            "participant_id": self.participant_id,
            "kind": self.kind,
        }
        return {name: value for name, value in named.items() if value is not None}

    @property
    def is_empty(self) -> bool:
        return not self.equalities and not self.statuses

    def matches(self, values: dict[str, Any]) -> bool:
        """The same test as the page's WHERE clause, on a row's values (for wake-ups)."""
        if any(values[name] != value for name, value in self.equalities.items()):
            return False
        return not self.statuses or values["status"] in self.statuses


@dataclass(frozen=True, slots=True)
class Change:
    recording: RecordingRow
    position: Position


@dataclass(frozen=True, slots=True)
class FeedPage:
    changes: list[Change]
    next: Position  # where the consumer continues; never behind the last change returned


def _horizon(dialect: str) -> ColumnElement[int]:
    if dialect == "postgresql":
        # xid8 has no cast to bigint; its text form is the decimal number.
        return literal_column("pg_snapshot_xmin(pg_current_snapshot())::text::bigint", BigInteger())
    return select(FEED_CLOCK.c.txn + 1).where(FEED_CLOCK.c.id == 1).scalar_subquery()


def _after(txn: str = "after_txn", ident: str = "after_id") -> ColumnElement[bool]:
    return tuple_(RECORDINGS.c.change_txn, RECORDINGS.c.id) > tuple_(
        bindparam(txn, type_=BigInteger()), bindparam(ident, type_=BigInteger())
    )


def _frontier(horizon: ColumnElement[int]) -> Select[Any]:
    """The position SCAN_BUDGET changes past the position read from (a row, if there is
    one): how far a filtered read looks."""
    return (
        select(RECORDINGS.c.change_txn.label("txn"), RECORDINGS.c.id.label("id"))
        .where(_after(), RECORDINGS.c.change_txn < horizon)
        .order_by(RECORDINGS.c.change_txn, RECORDINGS.c.id)
        .offset(SCAN_BUDGET - 1)
        .limit(1)
    )


@lru_cache(maxsize=8)
def _frontier_query(dialect: str, scan: bool) -> Query:
    """The horizon, and with `scan` the position SCAN_BUDGET changes on (if there is one)."""
    horizon = _horizon(dialect)
    if not scan:
        return Query(
            select(horizon.label("horizon"), literal(None).label("txn"), literal(None).label("id"))
        )
    frontier = _frontier(_horizon(dialect)).subquery("frontier")
    one = select(literal(1).label("one")).subquery("one")
    return Query(
        select(horizon.label("horizon"), frontier.c.txn, frontier.c.id).select_from(
            one.outerjoin(frontier, literal(True))
        )
    )


def _filtered(statement: Select[Any], equal: tuple[str, ...], statuses: int) -> Select[Any]:
    """A page: `statement` with the filters' conditions, in feed order, at most `limit`."""
    for name in equal:
        statement = statement.where(RECORDINGS.c[name] == bindparam(name))
    if statuses:
        statement = statement.where(
            RECORDINGS.c.status.in_([bindparam(f"status_{i}") for i in range(statuses)])
        )
    statement = statement.order_by(RECORDINGS.c.change_txn, RECORDINGS.c.id)
    return statement.limit(bindparam("limit", type_=Integer()))


@lru_cache(maxsize=256)
def _page_query(equal: tuple[str, ...], statuses: int, bounded: bool) -> Query:
    statement = select(*RECORDING_ROW_COLUMNS, RECORDINGS.c.change_txn).where(
        _after(), RECORDINGS.c.change_txn < bindparam("horizon", type_=BigInteger())
    )
    if bounded:
        statement = statement.where(
            tuple_(RECORDINGS.c.change_txn, RECORDINGS.c.id)
            <= tuple_(
                bindparam("last_txn", type_=BigInteger()), bindparam("last_id", type_=BigInteger())
            )
        )
    return Query(_filtered(statement, equal, statuses))


@lru_cache(maxsize=256)
def one_statement_page_query(equal: tuple[str, ...], statuses: int, scan: bool) -> Query:
    """The horizon, the scan's frontier and the page in one statement (PostgreSQL): one
    round trip per page instead of two. The page is a LATERAL subquery below the bounds
    read in the same snapshot, so it is an index range scan of ix_recordings_change from
    the position to the frontier (or the horizon), stopping at `limit`; the bounds come
    back on every row, and on one row of NULLs when the page is empty."""
    bounds = select(_horizon("postgresql").label("horizon")).subquery("bounds")
    below = [_after(), RECORDINGS.c.change_txn < bounds.c.horizon]
    frontier = None
    if scan:
        frontier = _frontier(bounds.c.horizon).lateral("frontier")
        # No frontier (fewer changes than the budget): up to the horizon, as below.
        upper = tuple_(
            func.coalesce(frontier.c.txn, bounds.c.horizon), func.coalesce(frontier.c.id, 0)
        )
        below.append(tuple_(RECORDINGS.c.change_txn, RECORDINGS.c.id) <= upper)
    page = _filtered(
        select(*RECORDING_ROW_COLUMNS, RECORDINGS.c.change_txn).where(*below), equal, statuses
    ).lateral("page")
    joined = bounds if frontier is None else bounds.outerjoin(frontier, true())
    return Query(
        select(
            bounds.c.horizon,
            null() if frontier is None else frontier.c.txn,
            null() if frontier is None else frontier.c.id,
            *page.c,
        )
        .select_from(joined.outerjoin(page, true()))
        .order_by(page.c.change_txn, page.c.id)
    )


async def now(reader: Reader, dialect: str) -> Position:
    """The feed's current end: a consumer starting here sees only what changes next."""
    (row,) = await reader.rows(_frontier_query(dialect, scan=False), {})
    return Position(int(row[0]), 0)


async def read(
    reader: Reader, dialect: str, after: Position, filters: ChangeFilter, limit: int
) -> FeedPage:
    """The changes after `after` that match `filters`, oldest first, at most `limit`."""
    scan = not filters.is_empty
    equal = tuple(sorted(filters.equalities))
    statuses = sorted(filters.statuses)
    params: dict[str, Any] = {"after_txn": after.txn, "after_id": after.id, "limit": limit}
    params.update(filters.equalities)
    params.update({f"status_{i}": status for i, status in enumerate(statuses)})
    if dialect == "postgresql":
        query = one_statement_page_query(equal, len(statuses), scan)
        rows = await reader.rows(query, params)
        horizon, last_txn, last_id = rows[0][:3]
        rows = [row[3:] for row in rows if row[3] is not None]
    else:  # SQLite has no LATERAL; its statements cost no round trip
        frontier_query = _frontier_query(dialect, scan)
        ((horizon, last_txn, last_id),) = await reader.rows(frontier_query, params)
        if last_txn is not None:
            params.update(last_txn=last_txn, last_id=last_id)
        query = _page_query(equal, len(statuses), last_txn is not None)
        rows = await reader.rows(query, {**params, "horizon": horizon})
    frontier = Position(int(last_txn), int(last_id)) if last_txn is not None else None
    changes = [Change(RecordingRow(*row[:-1]), Position(row[-1], row[0])) for row in rows]
    if len(changes) == limit:
        following = changes[-1].position
    elif frontier is not None:
        following = frontier  # the scan budget is spent: continue after what was looked at
    else:
        following = Position(int(horizon), 0)  # everything below the horizon was looked at
    return FeedPage(changes, max(following, after))


# What a process's watcher reads to decide whom to wake: the changes since the oldest
# waiting position, with the columns filters test, and the horizon of the same statement.
WATCH_COLUMNS = ("id", "change_txn", "meeting_id", "session_id", "participant_id", "kind", "status")
WATCH_LIMIT = 2000


@lru_cache(maxsize=4)
def watch_query(dialect: str) -> Query:
    changed = (
        select(*(RECORDINGS.c[name] for name in WATCH_COLUMNS))
        .where(_after(), RECORDINGS.c.change_txn < _horizon(dialect))
        .order_by(RECORDINGS.c.change_txn, RECORDINGS.c.id)
        .limit(WATCH_LIMIT)
        .subquery("changed")
    )
    one = select(literal(1).label("one")).subquery("one")
    # One row with the horizon and NULLs when nothing changed: the horizon always comes back,
    # read in the same snapshot as the rows (a later reading could be past a change that
    # committed in between, and a waiter moved there would never hear of it).
    return Query(
        select(_horizon(dialect).label("horizon"), *changed.c)
        .select_from(one.outerjoin(changed, literal(True)))
        .order_by(changed.c.change_txn, changed.c.id)
    )


@dataclass(frozen=True, slots=True)
class Watched:
    horizon: int
    changes: list[dict[str, Any]]  # WATCH_COLUMNS of each change, oldest first

    @property
    def complete(self) -> bool:
        """Every change below the horizon after the read's start was returned."""
        return len(self.changes) < WATCH_LIMIT


async def watch(reader: Reader, dialect: str, after: Position) -> Watched:
    """The changes after `after` (at most WATCH_LIMIT), and the horizon they are below."""
    rows = await reader.rows(watch_query(dialect), {"after_txn": after.txn, "after_id": after.id})
    changes = [dict(zip(WATCH_COLUMNS, row[1:], strict=True)) for row in rows if row[1] is not None]
    return Watched(int(rows[0][0]), changes)
