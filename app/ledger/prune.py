"""Retention: remove old deliveries from the log without changing what rebuild finds.

What goes, once it was received before the cutoff:
- ignored and rejected deliveries (they never touched a recording);
- the applied and duplicate events of a track's finished runs: its first runs, in order,
  as long as each is stopped or failed and none of its events arrived after the cutoff.
  Before they go, each of those runs' state as its events made it is written to
  `recording_baselines` (the fold's, which is what its recording holds).

What stays: every recording; the events of runs still open (and of the runs after one);
every event of a track whose recordings differ from the log in any way rebuild would
report (the prune leaves the evidence; `trackhook rebuild` lists it).

Why rebuild stays exact. Rebuild folds each track from its baselines (`TrackFold.resumed`)
and then its remaining events. The removed events are a track's first ones in the order
they were applied: a finished run never changes once the next one opens, and only retries
(duplicates, which change nothing) join it after that. So the remaining events fold on the
baselines exactly as they folded on the removed events, and a retry of a removed event is
still a duplicate of its run: the baseline holds its fingerprint, as the recording does
(intake decides duplicates from the recordings, which a prune never touches).

How it walks. The log in id order (arrival order), `batch_size` events at a time, stopping
at the first batch that holds nothing received before the cutoff. Each batch is one
transaction: it finds the sessions of the old events it looked at (each session once a
walk: by the batch that holds its first remaining event), reads all of their events,
recordings and baselines, folds them (the same code as rebuild), and writes baselines and
deletes events together. So a run that is stopped anywhere leaves a consistent ledger, and
the next one goes on where it stopped (what was removed is gone from the walk). On
PostgreSQL a batch is REPEATABLE READ (one snapshot: a track's events and recordings agree);
it never writes a recording, and the rows it deletes are ones intake never touches. One lock
can hold intake up: a baseline's foreign key check share-locks its recording until the
batch commits, and the writers lock a track's latest row `FOR UPDATE`, so a delivery for a
track whose last run is being pruned (it received nothing for the whole age) waits for the
end of that batch. A batch that conflicts (intake changed a recording it writes a baseline
for, another prune, a repair) is rolled back and tried again. On SQLite a batch holds the
write lock (`BEGIN IMMEDIATE`), so intake waits for it: keep batches small there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.ledger.faults import sqlstate_of, storage_faults
from app.ledger.rebuild import (
    BASELINE_KEYED,
    FOLDED_EVENT_COLUMNS,
    FOLDED_OUTCOME_VALUES,
    STORED_RECORDINGS,
    FoldedEvent,
    StoredRecording,
    compare_key,
    fold_event,
    load_stored,
    resumed_folds,
    stream_rows,
)
from app.ledger.rows import STATE_COLUMNS, state_values
from app.ledger.tables import BASELINES, EVENTS, RECORDINGS
from app.rules.lifecycle import Outcome, RecordingState, TrackFold, TrackKey

BATCH_SIZE = 2000  # log rows looked at per transaction
# A statement of a batch that takes longer means the batch is too large for the database.
STATEMENT_TIMEOUT_SECONDS = 60.0
MAX_ATTEMPTS = 5  # a batch rolled back by a conflict is tried again this many times
# Bind parameters per statement stay far below SQLite's and asyncpg's limits (32,766).
_IDS_PER_STATEMENT = 500  # ids in one IN list
_BASELINES_PER_STATEMENT = 100  # rows of one upsert (16 columns each)

_WALK = (
    select(
        EVENTS.c.id,
        EVENTS.c.outcome,
        EVENTS.c.received_at,
        EVENTS.c.session_id,
    )
    .where(EVENTS.c.id > bindparam("after"))
    .order_by(EVENTS.c.id)
    .limit(bindparam("size"))
)

# A session's events are read by the session index. The outcome is tested as an expression,
# not the column: for `outcome IN (...)` SQLite (no statistics) takes the outcome index
# instead and reads every applied event of the log, in each batch, and PostgreSQL ANDs both
# indexes (on the bench database, once pruned: 2.1M index entries read, 363 ms, not 31 ms).
_FOLDED_OUTCOME = EVENTS.c.outcome.concat("").in_(FOLDED_OUTCOME_VALUES)

# The sessions an earlier batch of this walk decided: each is decided, all its tracks, by the
# batch that holds its first remaining event, so a walk reads and counts it once.
_WALKED = (
    select(EVENTS.c.session_id)
    .where(
        EVENTS.c.session_id.in_(bindparam("sessions", expanding=True)),
        _FOLDED_OUTCOME,
        EVENTS.c.id <= bindparam("after"),
    )
    .distinct()
)


@dataclass(slots=True)
class PruneReport:
    """What a prune removed (or, dry, would remove), in rows, and what it cost."""

    cutoff: datetime
    dry_run: bool
    ignored: int = 0
    rejected: int = 0
    events: int = 0  # applied and duplicate events of finished runs
    recordings: int = 0  # baselines written (a recording's, each time more of it went)
    tracks: int = 0  # tracks that had events removed
    differing: int = 0  # tracks left alone: their recordings differ from the log
    batches: int = 0
    retries: int = 0
    seconds: float = 0.0

    @property
    def removed(self) -> int:
        return self.ignored + self.rejected + self.events

    def lines(self) -> list[str]:
        would = "to remove" if self.dry_run else "removed"
        rate = self.removed / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"cutoff: {self.cutoff.isoformat()} (events received before it)",
            f"ignored deliveries {would}: {self.ignored}",
            f"rejected deliveries {would}: {self.rejected}",
            f"events of finished recordings {would}: {self.events} "
            f"({self.recordings} recording(s), {self.tracks} track(s))",
            f"rows {would}: {self.removed}",
        ]
        if self.differing:
            lines.append(
                f"tracks left as they are, their recordings differ from the log: "
                f"{self.differing} (`trackhook rebuild` lists the differences)"
            )
        lines.append(
            f"batches: {self.batches}, retried: {self.retries}; "
            f"duration: {self.seconds:.1f} s ({rate:,.0f} rows/s)"
        )
        if self.dry_run:
            lines.append("dry run: nothing was changed")
        return lines


@dataclass(slots=True)
class _Batch:
    """What one batch found (and, unless a dry run, did)."""

    done: bool = False  # the walk is over: nothing here was received before the cutoff
    last_id: int = 0
    ignored: int = 0
    rejected: int = 0
    events: int = 0
    recordings: int = 0
    tracks: int = 0
    differing: int = 0


@dataclass(slots=True)
class _TrackPrune:
    """A track's first runs whose events go, with their baselines."""

    key: TrackKey
    runs: list[tuple[StoredRecording, RecordingState, int]] = field(default_factory=list)
    event_ids: list[int] = field(default_factory=list)


async def prune(
    engine: AsyncEngine,
    cutoff: datetime,
    *,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    lock_timeout_seconds: float = 5.0,
    after_batch: Callable[[PruneReport], None] | None = None,
) -> PruneReport:
    """Remove what the log no longer needs from before `cutoff` (see the module). With
    `dry_run` nothing is written: the report says what would go. `after_batch` is called
    after each batch committed, with the totals so far."""
    report = PruneReport(cutoff, dry_run)
    started = time.monotonic()
    after = 0
    async with AsyncExitStack() as stack:
        # One connection for the walk, a transaction per batch on it.
        async with storage_faults():
            connection = await stack.enter_async_context(engine.connect())
            if engine.dialect.name == "postgresql":
                await connection.execution_options(isolation_level="REPEATABLE READ")
        while True:
            async with storage_faults():
                batch = await _batch_with_retries(
                    connection, report, cutoff, after, batch_size, dry_run, lock_timeout_seconds
                )
            report.batches += 1
            report.ignored += batch.ignored
            report.rejected += batch.rejected
            report.events += batch.events
            report.recordings += batch.recordings
            report.tracks += batch.tracks
            report.differing += batch.differing
            report.seconds = time.monotonic() - started
            if batch.done:
                break
            after = batch.last_id
            if after_batch is not None:
                after_batch(report)
    return report


async def _batch_with_retries(
    connection: AsyncConnection,
    report: PruneReport,
    cutoff: datetime,
    after: int,
    size: int,
    dry_run: bool,
    lock_timeout_seconds: float,
) -> _Batch:
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            async with connection.begin():
                await _bound(connection, lock_timeout_seconds)
                return await _batch(connection, cutoff, after, size, dry_run)
        except DBAPIError as exc:
            if not _worth_retrying(exc) or attempt == MAX_ATTEMPTS:
                raise
            report.retries += 1
            await asyncio.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


def _worth_retrying(exc: DBAPIError) -> bool:
    """Rolled back by a conflict (serialisation, deadlock), or a lock not had in time."""
    code = sqlstate_of(exc) or ""
    if code[:2] == "40" or code == "55P03":
        return True
    return isinstance(exc, OperationalError) and "database is locked" in str(exc)


async def _bound(connection: AsyncConnection, lock_timeout_seconds: float) -> None:
    """This transaction's bounds (PostgreSQL): a lock waited for no longer than a webhook
    would wait, a statement no longer than STATEMENT_TIMEOUT_SECONDS, and never idle in it
    for long (a stuck prune must not hold its snapshot). Its statements are small index
    reads: no JIT compilation and no parallel workers, which cost more than they save there
    (JIT: 35 ms a statement on the bench database). SQLite: the engine's busy wait."""
    if connection.dialect.name != "postgresql":
        return
    settings = {
        "lock_timeout": str(int(lock_timeout_seconds * 1000)),
        "statement_timeout": str(int(STATEMENT_TIMEOUT_SECONDS * 1000)),
        "idle_in_transaction_session_timeout": str(int(STATEMENT_TIMEOUT_SECONDS * 1000)),
        "jit": "off",
        "max_parallel_workers_per_gather": "0",
    }
    for name, value in settings.items():
        await connection.execute(
            text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value}
        )


async def _batch(
    connection: AsyncConnection, cutoff: datetime, after: int, size: int, dry_run: bool
) -> _Batch:
    rows = (await connection.execute(_WALK, {"after": after, "size": size})).all()
    old = [row for row in rows if row.received_at < cutoff]
    if not old:
        return _Batch(done=True)
    batch = _Batch(last_id=rows[-1].id)
    unapplied = [row.id for row in old if row.outcome not in FOLDED_OUTCOME_VALUES]
    batch.ignored = sum(1 for row in old if row.outcome == Outcome.IGNORED)
    batch.rejected = len(unapplied) - batch.ignored
    sessions = {row.session_id for row in old if row.outcome in FOLDED_OUTCOME_VALUES}
    sessions.discard(None)
    if sessions and after > 0:
        walked = await connection.execute(_WALKED, {"sessions": sorted(sessions), "after": after})
        sessions -= set(walked.scalars())
    tracks, differing = await _tracks_to_prune(connection, sorted(sessions), cutoff)
    batch.differing = differing
    batch.tracks = len(tracks)
    batch.recordings = sum(len(track.runs) for track in tracks)
    doomed = [event_id for track in tracks for event_id in track.event_ids]
    batch.events = len(doomed)
    if not dry_run:
        await _write_baselines(connection, tracks, datetime.now(UTC))
        await _delete_events(connection, [*unapplied, *doomed])
    return batch


async def _tracks_to_prune(
    connection: AsyncConnection, sessions: Sequence[str], cutoff: datetime
) -> tuple[list[_TrackPrune], int]:
    """The tracks of `sessions` with events to remove; and how many were left alone because
    they differ from the log."""
    if not sessions:
        return [], 0
    in_sessions = RECORDINGS.c.session_id.in_(sessions)
    # A batch's results are small: fetched whole (streaming costs a greenlet switch a row).
    stored = await load_stored(connection, STORED_RECORDINGS.where(in_sessions), batch=None)
    by_id = {row.id: row for rows in stored.values() for row in rows.values()}
    # By the baselines' own key: a filter on the sessions would let the planner scan them.
    of_these = BASELINES.c.recording_id.in_(sorted(by_id))
    folded, broken = await resumed_folds(connection, BASELINE_KEYED.where(of_these), batch=None)
    differing: set[TrackKey] = set(broken)
    events: dict[TrackKey, list[FoldedEvent]] = {}
    statement = (
        select(*FOLDED_EVENT_COLUMNS, EVENTS.c.participant_id, EVENTS.c.kind, EVENTS.c.session_id)
        .where(EVENTS.c.session_id.in_(sessions), _FOLDED_OUTCOME)
        .order_by(EVENTS.c.id)
    )
    async for row in stream_rows(connection, statement, batch=None):
        event, differences = fold_event(row, folded, by_id)
        logged = TrackKey(row["session_id"], row["participant_id"], row["kind"])
        if differences or event is None or event.key != logged:
            differing.add(logged)
            if event is not None:
                differing.add(event.key)
            linked = by_id.get(row["recording_id"])
            if linked is not None:
                differing.add(linked.key)
        if event is not None:
            events.setdefault(event.key, []).append(event)
    tracks: list[_TrackPrune] = []
    left_alone = 0
    for key in sorted(folded.keys() | stored.keys(), key=_sort_key):
        key_events = events.get(key, [])
        if not key_events:
            continue  # nothing left to remove
        rows = stored.get(key, {})
        if key in differing or compare_key(key, folded.get(key), rows):
            left_alone += 1
            continue
        track = _prunable(key, folded[key], key_events, rows, cutoff)
        if track is not None:
            tracks.append(track)
    return tracks, left_alone


def _prunable(
    key: TrackKey,
    fold: TrackFold,
    events: Sequence[FoldedEvent],
    stored: Mapping[int, StoredRecording],
    cutoff: datetime,
) -> _TrackPrune | None:
    """The track's first runs that are finished and got nothing since the cutoff, and their
    events; None if there are none with events left."""
    newest: dict[int, datetime] = {}
    counts: dict[int, int] = {}
    for event in events:
        newest[event.sequence] = max(
            event.received_at, newest.get(event.sequence, event.received_at)
        )
        counts[event.sequence] = counts.get(event.sequence, 0) + 1
    last = 0
    for run in fold.recordings:
        seen = newest.get(run.sequence)  # None: only its baseline is left
        if not run.is_terminal or (seen is not None and seen >= cutoff):
            break
        last = run.sequence
    track = _TrackPrune(key)
    for run in fold.recordings[:last]:
        if run.sequence in counts:
            track.runs.append((stored[run.sequence], run, counts[run.sequence]))
    track.event_ids = [event.event_id for event in events if event.sequence <= last]
    return track if track.event_ids else None


def _sort_key(key: TrackKey) -> tuple[str, str, str]:
    return (key.session_id, key.participant_id, key.kind)


async def _write_baselines(
    connection: AsyncConnection, tracks: Iterable[_TrackPrune], now: datetime
) -> None:
    """Each run's baseline: its state now, its removed events added to those before."""
    values = [
        {
            "recording_id": stored.id,
            **state_values(state),
            "events_pruned": removed,
            "pruned_at": now,
        }
        for track in tracks
        for stored, state, removed in track.runs
    ]
    if not values:
        return
    dialect_insert: Any = (
        postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    )
    for chunk in _chunks(values, _BASELINES_PER_STATEMENT):
        statement = dialect_insert(BASELINES).values(chunk)
        excluded = statement.excluded
        await connection.execute(
            statement.on_conflict_do_update(
                index_elements=[BASELINES.c.recording_id],
                set_={
                    **{name: excluded[name] for name in STATE_COLUMNS},
                    "events_pruned": BASELINES.c.events_pruned + excluded.events_pruned,
                    "pruned_at": excluded.pruned_at,
                },
            )
        )


async def _delete_events(connection: AsyncConnection, event_ids: Sequence[int]) -> None:
    for chunk in _chunks(sorted(event_ids), _IDS_PER_STATEMENT):
        await connection.execute(delete(EVENTS).where(EVENTS.c.id.in_(chunk)))


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
