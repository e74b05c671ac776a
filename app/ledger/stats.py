"""What the metrics read from the database: the recordings still open, by status, how many
of them are stuck, and (PostgreSQL) how long the oldest transaction that has written has
been holding the change feed back.

Each read is bounded by the runs still open, never by the table: the open ones are counted
from their own indexes (`ix_recordings_status_updated` by status, the partial
`ix_recordings_open_updated` for the stuck ones). Finished recordings are left out: their
count grows with the table (docs/OPERATIONS.md, Metrics, has the figures on 1M rows); the
metrics count the recordings finishing instead, from the seam.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy import Float, bindparam, cast, column, func, select, table, text

from app.ledger.reader import Query, Reader
from app.ledger.tables import OPEN_RUNS, RECORDINGS, UTCDateTime
from app.rules.lifecycle import OPEN_STATUSES

OPEN = tuple(sorted(status.value for status in OPEN_STATUSES))


@dataclass(frozen=True, slots=True)
class RecordingStats:
    open: dict[str, int]  # every open status, those with none included
    stuck: int
    feed_lag_seconds: float | None  # None on SQLite, whose writers are serialised


@lru_cache(maxsize=1)
def _open_query() -> Query:
    # The statuses as literals (an expanding IN parameter would not compile once for
    # asyncpg): an index-only range per status on ix_recordings_status_updated.
    return Query(
        select(RECORDINGS.c.status, func.count())
        .where(text(OPEN_RUNS))
        .group_by(RECORDINGS.c.status)
    )


@lru_cache(maxsize=1)
def _stuck_query() -> Query:
    # In the very words of ix_recordings_open_updated's predicate (the planner proves the
    # index applies from that text alone).
    return Query(
        select(func.count()).where(
            text(OPEN_RUNS),
            RECORDINGS.c.updated_at < bindparam("stuck_before", type_=UTCDateTime()),
        )
    )


_ACTIVITY = table("pg_stat_activity", column("backend_xid"), column("xact_start"))


@lru_cache(maxsize=1)
def _oldest_writer_query() -> Query:
    """The age of the transaction with the oldest id still in progress, in any database of
    the cluster: the feed's horizon (ledger/feed.py) stays at it until it ends. A role
    without pg_read_all_stats sees only its own role's transactions."""
    age = func.extract("epoch", func.clock_timestamp() - _ACTIVITY.c.xact_start)
    return Query(
        select(cast(age, Float))
        .where(_ACTIVITY.c.backend_xid.is_not(None))
        .order_by(func.age(_ACTIVITY.c.backend_xid).desc())
        .limit(1)
    )


async def recording_stats(reader: Reader, dialect: str, stuck_before: datetime) -> RecordingStats:
    counts = dict.fromkeys(OPEN, 0)
    for status, count in await reader.rows(_open_query(), {}):
        counts[status] = int(count)
    ((stuck,),) = await reader.rows(_stuck_query(), {"stuck_before": stuck_before})
    lag: float | None = None
    if dialect == "postgresql":
        rows = await reader.rows(_oldest_writer_query(), {})
        lag = max(0.0, float(rows[0][0])) if rows and rows[0][0] is not None else 0.0
    return RecordingStats(counts, int(stuck), lag)
