"""Recompute every recording from the webhook event log and report (or repair) where the
stored state differs.

The log is the source of truth: its applied and duplicate events, read in id order (the
order the service applied them; it holds the key's row lock while appending), are mapped
exactly as intake maps them and folded with the lifecycle rules in `lifecycle`. A track
whose first events `trackhook prune` removed starts from the baselines it left
(`recording_baselines`: each pruned run's state as those events made it), and its remaining
events fold on from there (`TrackFold.resumed`), exactly as they did on the whole log.

What `repair=True` does, in the same transaction as the comparison:
- every key with a recording-level difference gets all of its recordings rewritten from
  the fold (state, meeting id, latest flag; a missing sequence is inserted);
- every event whose `recording_id` points at the wrong recording is pointed at the right
  one (the only change ever made to the log);
- stored recordings that no event explains are deleted (if an ignored or rejected event
  still points at one, the foreign key refuses and the whole repair is rolled back).
It never changes an event's outcome, fingerprint or payload: those are history (what the
sender was told, what it sent), so such differences are reported and stay.

On PostgreSQL the work runs in one REPEATABLE READ transaction, so it compares one
consistent snapshot; a repair that races a concurrent intake write fails with a
serialisation error and changes nothing (run it again). Memory grows with the number of
recordings (the fold keeps every key's state), not with the number of events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.ledger.clock import transaction_number
from app.ledger.faults import storage_faults
from app.ledger.rows import (
    KEY_COLUMNS,
    STATE_COLUMNS,
    TIMESTAMP_COLUMNS,
    key_values,
    state_from_values,
    state_values,
)
from app.ledger.tables import BASELINES, EVENTS, RECORDINGS
from app.rules.lifecycle import Outcome, RecordingState, TrackFold, TrackKey
from app.videosdk.documents import fingerprint_of, track_event_of, track_key_of
from app.videosdk.schemas import validate_track_webhook

# Only these outcomes ever touched a recording; ignored and rejected deliveries did not.
FOLDED_OUTCOMES = (Outcome.APPLIED, Outcome.DUPLICATE)


@dataclass(frozen=True, slots=True)
class Difference:
    """One way the stored state disagrees with the log. `aspect` names what differs:
    a recording column (`status`, `files`, `started_at`, ...), `count`, `missing` or
    `unexplained` for a key's recordings, `baseline` for a key's baselines (prune's), or
    `outcome`, `recording_id`, `fingerprint` or `payload` for an event."""

    aspect: str
    description: str
    recording_id: int | None = None
    event_id: int | None = None


@dataclass(slots=True)
class RebuildReport:
    events_read: int = 0
    baselines: int = 0  # runs started from what a prune left of their events
    keys: int = 0
    recordings_rebuilt: int = 0
    recordings_stored: int = 0
    differences: list[Difference] = field(default_factory=list)
    repaired: bool = False

    def lines(self) -> list[str]:
        """The counts, then one line per difference."""
        verdict = f"{len(self.differences)} difference(s)"
        if self.repaired:
            verdict += ", repaired"
        return [
            f"events read: {self.events_read}",
            *([f"baselines of pruned recordings: {self.baselines}"] if self.baselines else []),
            f"keys: {self.keys}",
            f"recordings rebuilt: {self.recordings_rebuilt}",
            f"recordings stored: {self.recordings_stored}",
            verdict,
            *(f"- {difference.description}" for difference in self.differences),
        ]


@dataclass(frozen=True, slots=True)
class StoredRecording:
    """A recording as stored, as rebuild compares it."""

    id: int
    key: TrackKey
    is_latest: bool
    state: RecordingState


@dataclass(frozen=True, slots=True)
class FoldedEvent:
    """A logged event as the fold gives it: its key, the run it belongs to, and whether its
    stored link (`recording_id`) points elsewhere."""

    event_id: int
    key: TrackKey
    sequence: int
    received_at: datetime
    misplaced: bool


@dataclass(frozen=True, slots=True)
class _Relink:
    event_id: int
    key: TrackKey
    sequence: int


def _name(key: TrackKey, sequence: int | None = None) -> str:
    where = f"({key.session_id}, {key.participant_id}, {key.kind})"
    return where if sequence is None else f"{where} #{sequence}"


async def rebuild(engine: AsyncEngine, repair: bool) -> RebuildReport:
    """Fold the log, compare with the recordings table, and repair it if asked, in one
    transaction of its own."""
    report = RebuildReport()
    async with storage_faults(), engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            await connection.execution_options(isolation_level="REPEATABLE READ")
        async with connection.begin():
            stored = await load_stored(connection)
            report.recordings_stored = sum(len(rows) for rows in stored.values())
            by_id = {row.id: row for rows in stored.values() for row in rows.values()}
            folded, broken = await resumed_folds(connection, BASELINE_KEYED)
            report.differences.extend(broken.values())
            report.baselines = sum(len(fold.recordings) for fold in folded.values())
            relinks = await _fold_log(connection, folded, by_id, report)
            dirty = _compare(folded, stored, report)
            report.keys = len(folded)
            report.recordings_rebuilt = sum(len(fold.recordings) for fold in folded.values())
            if repair and report.differences:
                await _repair(connection, folded, stored, dirty, relinks)
                report.repaired = True
    return report


async def stream_rows(
    connection: AsyncConnection, statement: Any, batch: int | None = 1000
) -> AsyncIterator[Any]:
    """Rows fetched `batch` at a time (a server-side cursor on PostgreSQL), so a rebuild
    never holds a whole table's result at once; with `batch` None, all at once (for a
    result known to be small: streaming costs a greenlet switch per row)."""
    if batch is None:
        for row in (await connection.execute(statement)).mappings():
            yield row
        return
    result = await connection.stream(statement.execution_options(yield_per=batch))
    async for row in result.mappings():
        yield row


STORED_RECORDINGS = select(
    RECORDINGS.c.id,
    RECORDINGS.c.is_latest,
    *(RECORDINGS.c[n] for n in (*KEY_COLUMNS, *STATE_COLUMNS)),
).order_by(RECORDINGS.c.id)

# A log row as the fold reads it.
FOLDED_EVENT_COLUMNS = (
    EVENTS.c.id,
    EVENTS.c.webhook_type,
    EVENTS.c.received_at,
    EVENTS.c.outcome,
    EVENTS.c.fingerprint,
    EVENTS.c.recording_id,
    EVENTS.c.payload,
    EVENTS.c.body,
)
FOLDED_OUTCOME_VALUES = [outcome.value for outcome in FOLDED_OUTCOMES]

_FOLDED = (
    select(*FOLDED_EVENT_COLUMNS)
    .where(EVENTS.c.outcome.in_(FOLDED_OUTCOME_VALUES))
    .order_by(EVENTS.c.id)
)

# Every baseline with its recording's key, a track's runs in order.
BASELINE_KEYED = (
    select(*(RECORDINGS.c[n] for n in KEY_COLUMNS), *(BASELINES.c[n] for n in STATE_COLUMNS))
    .join_from(BASELINES, RECORDINGS, BASELINES.c.recording_id == RECORDINGS.c.id)
    .order_by(*(RECORDINGS.c[n] for n in KEY_COLUMNS), BASELINES.c.sequence)
)


async def resumed_folds(
    connection: AsyncConnection, statement: Any, batch: int | None = 1000
) -> tuple[dict[TrackKey, TrackFold], dict[TrackKey, Difference]]:
    """Each track that has baselines (those `statement` selects), its fold resumed from
    them; and the tracks whose baselines are not their runs 1..n, each with its difference
    (such a track starts from nothing: its recordings are then compared with what its
    remaining events alone give)."""
    runs: dict[TrackKey, list[RecordingState]] = {}
    async for row in stream_rows(connection, statement, batch):
        key = TrackKey(row["session_id"], row["participant_id"], row["kind"])
        runs.setdefault(key, []).append(state_from_values(row))
    folded: dict[TrackKey, TrackFold] = {}
    broken: dict[TrackKey, Difference] = {}
    for key, states in runs.items():
        try:
            folded[key] = TrackFold.resumed(states)
        except ValueError:
            sequences = ", ".join(str(state.sequence) for state in states)
            broken[key] = Difference(
                "baseline",
                f"key {_name(key)}: baselines of runs {sequences}, not of its first runs; "
                "its remaining events are folded from nothing",
            )
    return folded, broken


async def load_stored(
    connection: AsyncConnection, statement: Any = STORED_RECORDINGS, batch: int | None = 1000
) -> dict[TrackKey, dict[int, StoredRecording]]:
    """The recordings `statement` (STORED_RECORDINGS, or a part of it) selects, per key and
    sequence (fetched as `stream_rows` does)."""
    stored: dict[TrackKey, dict[int, StoredRecording]] = {}
    async for row in stream_rows(connection, statement, batch):
        key = TrackKey(row["session_id"], row["participant_id"], row["kind"])
        state = state_from_values(row)
        stored.setdefault(key, {})[state.sequence] = StoredRecording(
            row["id"], key, row["is_latest"], state
        )
    return stored


async def _fold_log(
    connection: AsyncConnection,
    folded: dict[TrackKey, TrackFold],
    by_id: dict[int, StoredRecording],
    report: RebuildReport,
) -> list[_Relink]:
    """Each key's recordings from its events (after its baselines, if it has any); checks
    each event's stored outcome and link.

    Steps through `transition` event by event (exactly what `lifecycle.fold` does) so
    that no key's events need to be held in memory."""
    relinks: list[_Relink] = []
    async for row in stream_rows(connection, _FOLDED):
        report.events_read += 1
        event, differences = fold_event(row, folded, by_id)
        report.differences.extend(differences)
        if event is not None and event.misplaced:
            relinks.append(_Relink(event.event_id, event.key, event.sequence))
    return relinks


def fold_event(
    row: Mapping[str, Any], folded: dict[TrackKey, TrackFold], by_id: Mapping[int, StoredRecording]
) -> tuple[FoldedEvent | None, list[Difference]]:
    """One log row (FOLDED_EVENT_COLUMNS) mapped exactly as intake maps it and folded into
    its key's fold in `folded` (a new one for a key not there yet); with every way its
    stored fingerprint, outcome and link disagree with that. None for a payload that no
    longer validates (left out of the fold)."""
    differences: list[Difference] = []
    event_id: int = row["id"]
    try:
        webhook = validate_track_webhook(row["payload"])
    except ValidationError as exc:
        differences.append(
            Difference(
                "payload",
                f"event {event_id}: its stored payload no longer validates "
                f"({exc.error_count()} error(s)); left out of the rebuild",
                event_id=event_id,
            )
        )
        return None, differences
    # The payload is the source; a fingerprint that disagrees with it is the damage.
    fingerprint = fingerprint_of(row["payload"], row["body"])
    if fingerprint != row["fingerprint"]:
        differences.append(
            Difference(
                "fingerprint",
                f"event {event_id}: stored fingerprint {row['fingerprint'][:12]}... is not "
                f"its payload's {fingerprint[:12]}...",
                event_id=event_id,
            )
        )
    key = track_key_of(webhook)
    key_fold = folded.setdefault(key, TrackFold())
    step = key_fold.apply(track_event_of(webhook, fingerprint, row["received_at"]))
    sequence = step.sequence
    if row["outcome"] != step.outcome.value:
        differences.append(
            Difference(
                "outcome",
                f"event {event_id} ({row['webhook_type']}, {_name(key, sequence)}): stored "
                f"outcome {row['outcome']!r}, the log gives {step.outcome.value!r}",
                event_id=event_id,
            )
        )
    linked = by_id.get(row["recording_id"]) if row["recording_id"] is not None else None
    misplaced = linked is None or linked.key != key or linked.state.sequence != sequence
    if misplaced:
        now = (
            "no recording"
            if linked is None
            else f"recording {linked.id} {_name(linked.key, linked.state.sequence)}"
        )
        differences.append(
            Difference(
                "recording_id",
                f"event {event_id} ({row['webhook_type']}): points at {now}, "
                f"the log gives {_name(key, sequence)}",
                recording_id=row["recording_id"],
                event_id=event_id,
            )
        )
    event = FoldedEvent(event_id, key, sequence, row["received_at"], misplaced)
    return event, differences


def _compare(
    folded: dict[TrackKey, TrackFold],
    stored: dict[TrackKey, dict[int, StoredRecording]],
    report: RebuildReport,
) -> set[TrackKey]:
    """Record every recording-level difference; returns the keys that have one."""
    dirty: set[TrackKey] = set()
    for key in sorted(folded.keys() | stored.keys(), key=_sort_key):
        found = compare_key(key, folded.get(key), stored.get(key, {}))
        if found:
            dirty.add(key)
            report.differences.extend(found)
    return dirty


def _sort_key(key: TrackKey) -> tuple[str, str, str]:
    return (key.session_id, key.participant_id, key.kind)


def compare_key(
    key: TrackKey, key_fold: TrackFold | None, stored: dict[int, StoredRecording]
) -> list[Difference]:
    expected = key_fold.recordings if key_fold is not None else []
    found: list[Difference] = []
    if len(expected) != len(stored):
        found.append(
            Difference(
                "count",
                f"key {_name(key)}: {len(stored)} recording(s) stored, "
                f"the log gives {len(expected)}",
            )
        )
    for state in expected:
        row = stored.get(state.sequence)
        if row is None:
            found.append(
                Difference(
                    "missing",
                    f"recording {_name(key, state.sequence)} is missing "
                    f"(the log gives status {state.status.value!r})",
                )
            )
            continue
        assert key_fold is not None
        is_latest = state.sequence == expected[-1].sequence
        found.extend(_compare_recording(row, state, is_latest))
    sequences = {state.sequence for state in expected}
    for sequence, row in sorted(stored.items()):
        if sequence not in sequences:
            found.append(
                Difference(
                    "unexplained",
                    f"recording {row.id} {_name(key, sequence)} "
                    f"(status {row.state.status.value!r}) is explained by no event",
                    recording_id=row.id,
                )
            )
    return found


def _compare_recording(
    row: StoredRecording, state: RecordingState, is_latest: bool
) -> list[Difference]:
    name = f"recording {row.id} {_name(row.key, state.sequence)}"
    have = row.state
    found: list[Difference] = []

    def differs(aspect: str, stored_value: object, folded_value: object) -> None:
        if stored_value != folded_value:
            found.append(
                Difference(
                    aspect,
                    f"{name}: {aspect} is {stored_value!r}, the log gives {folded_value!r}",
                    recording_id=row.id,
                )
            )

    differs("meeting_id", have.meeting_id, state.meeting_id)
    differs("is_latest", row.is_latest, is_latest)
    differs("status", have.status.value, state.status.value)
    for status, column in TIMESTAMP_COLUMNS.items():
        differs(column, _stamp(have.received.get(status)), _stamp(state.received.get(status)))
    differs("created_at", _stamp(have.created_at), _stamp(state.created_at))
    differs("updated_at", _stamp(have.updated_at), _stamp(state.updated_at))
    if _files(have) != _files(state):
        found.append(
            Difference(
                "files",
                f"{name}: files differ: {_describe_files(have, state)}",
                recording_id=row.id,
            )
        )
    if list(have.fingerprints) != list(state.fingerprints):
        found.append(
            Difference(
                "event_fingerprints",
                f"{name}: holds {len(have.fingerprints)} event fingerprint(s), the log gives "
                f"{len(state.fingerprints)}"
                + ("" if set(have.fingerprints) != set(state.fingerprints) else " (order differs)"),
                recording_id=row.id,
            )
        )
    return found


def _stamp(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _files(state: RecordingState) -> list[dict[str, object]]:
    return [dict(entry) for entry in state.files]


def _describe_files(have: RecordingState, want: RecordingState) -> str:
    stored = [str(entry["filePath"]) for entry in have.files]
    expected = [str(entry["filePath"]) for entry in want.files]
    parts = []
    if missing := [path for path in expected if path not in stored]:
        parts.append(f"missing {', '.join(missing)}")
    if extra := [path for path in stored if path not in expected]:
        parts.append(f"not in the log {', '.join(extra)}")
    if not parts:
        parts.append(
            "same paths, different order" if stored != expected else "same paths, other details"
        )
    return "; ".join(parts)


async def _repair(
    connection: AsyncConnection,
    folded: dict[TrackKey, TrackFold],
    stored: dict[TrackKey, dict[int, StoredRecording]],
    dirty: set[TrackKey],
    relinks: list[_Relink],
) -> None:
    """Rewrite the dirty keys from the fold, relink events, delete the unexplained.

    The order keeps every constraint true after each statement: no key has two latest
    rows (flags cleared first), a (key, sequence) is only inserted where none is stored,
    and a row is deleted only once no event the fold knows points at it. Every rewritten
    recording's version grows, as with any other change."""
    ids: dict[tuple[TrackKey, int], int] = {
        (key, seq): row.id for key, rows in stored.items() for seq, row in rows.items()
    }
    unexplained: list[int] = []
    txn = await transaction_number(connection)  # a repair is a change the feed must show
    for key in sorted(dirty, key=_sort_key):
        await connection.execute(
            update(RECORDINGS).where(*_key_is(key), RECORDINGS.c.is_latest).values(is_latest=False)
        )
        key_fold = folded.get(key)
        expected = key_fold.recordings if key_fold is not None else []
        for state in expected:
            is_latest = state is expected[-1]
            recording_id = ids.get((key, state.sequence))
            if recording_id is None:
                ids[(key, state.sequence)] = await insert_recording(
                    connection, key, state, is_latest, txn
                )
            else:
                await connection.execute(
                    update(RECORDINGS)
                    .where(RECORDINGS.c.id == recording_id)
                    .values(
                        **state_values(state),
                        is_latest=is_latest,
                        version=RECORDINGS.c.version + 1,
                        change_txn=txn,
                    )
                )
        sequences = {state.sequence for state in expected}
        unexplained.extend(
            row.id for seq, row in stored.get(key, {}).items() if seq not in sequences
        )
    for relink in relinks:
        await connection.execute(
            update(EVENTS)
            .where(EVENTS.c.id == relink.event_id)
            .values(recording_id=ids[(relink.key, relink.sequence)])
        )
    if unexplained:
        await connection.execute(delete(RECORDINGS).where(RECORDINGS.c.id.in_(unexplained)))


def _key_is(key: TrackKey) -> Sequence[Any]:
    return [RECORDINGS.c[name] == value for name, value in key_values(key).items()]


async def insert_recording(
    connection: AsyncConnection, key: TrackKey, state: RecordingState, is_latest: bool, txn: int
) -> int:
    """A recording written from a fold (repair), not from a delivery."""
    statement = (
        insert(RECORDINGS)
        .values(
            **key_values(key),
            **state_values(state),
            is_latest=is_latest,
            version=1,
            change_txn=txn,
        )
        .returning(RECORDINGS.c.id)
    )
    recording_id: int = (await connection.execute(statement)).scalar_one()
    return recording_id
