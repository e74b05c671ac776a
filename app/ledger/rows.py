"""Typed rows, and the one mapping between a recording's columns and its lifecycle state.

Each row type's fields are named after its table's columns, in the order its queries
select them, so a query's column list is derived from the type (`columns_of`) and a
driver row becomes the type positionally (`RecordingRow(*row)`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Table

from app.ledger.tables import EVENTS, RECORDINGS
from app.rules.lifecycle import RecordingState, Status, TrackKey

TIMESTAMP_COLUMNS: dict[Status, str] = {status: f"{status.value}_at" for status in Status}

# The columns a recording's lifecycle state is stored in (its key and the bookkeeping
# columns id, is_latest and version are not part of it).
STATE_COLUMNS: tuple[str, ...] = (
    "meeting_id",
    "sequence",
    "status",
    *TIMESTAMP_COLUMNS.values(),
    "created_at",
    "updated_at",
    "files",
    "event_fingerprints",
)
KEY_COLUMNS: tuple[str, ...] = ("session_id", "participant_id", "kind")


def state_values(state: RecordingState) -> dict[str, Any]:
    """A state as the values of STATE_COLUMNS."""
    values: dict[str, Any] = {
        "meeting_id": state.meeting_id,
        "sequence": state.sequence,
        "status": state.status.value,
    }
    for status, column in TIMESTAMP_COLUMNS.items():
        values[column] = state.received.get(status)
    values.update(
        created_at=state.created_at,
        updated_at=state.updated_at,
        files=[dict(entry) for entry in state.files],
        event_fingerprints=list(state.fingerprints),
    )
    return values


def state_from_values(values: Mapping[str, Any]) -> RecordingState:
    """The inverse of `state_values`, from any row that has STATE_COLUMNS."""
    received = {
        status: stamp
        for status, column in TIMESTAMP_COLUMNS.items()
        if (stamp := values[column]) is not None
    }
    return RecordingState(
        sequence=values["sequence"],
        status=Status(values["status"]),
        created_at=values["created_at"],
        updated_at=values["updated_at"],
        received=received,
        files=tuple(values["files"]),
        fingerprints=tuple(values["event_fingerprints"]),
        meeting_id=values["meeting_id"],
    )


def key_values(key: TrackKey) -> dict[str, str]:
    return {"session_id": key.session_id, "participant_id": key.participant_id, "kind": key.kind}


@dataclass(frozen=True, slots=True)
class EarlierRun:
    """A run of the track before its latest: only what tells a retry of its deliveries."""

    id: int
    sequence: int
    fingerprints: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StoredRun:
    """A track's latest recording as a writer read it: what to decide on, the version a
    write must still find, and the track's earlier runs."""

    id: int
    version: int
    key: TrackKey
    state: RecordingState
    earlier: tuple[EarlierRun, ...] = ()

    @property
    def earlier_fingerprints(self) -> dict[str, int]:
        """What `lifecycle.transition` takes: fingerprint -> the earlier run's sequence."""
        return {fp: run.sequence for run in self.earlier for fp in run.fingerprints}

    def earlier_id(self, sequence: int) -> int:
        (found,) = (run.id for run in self.earlier if run.sequence == sequence)
        return found


# The writers' reading of a latest row: bookkeeping, key, then the state.
STORED_RUN_COLUMNS: tuple[str, ...] = ("id", "version", *KEY_COLUMNS, *STATE_COLUMNS)
EARLIER_RUN_COLUMNS: tuple[str, ...] = ("id", "sequence", "event_fingerprints")


def stored_run(
    values: Mapping[str, Any], earlier: Sequence[Sequence[Any]] | None = None
) -> StoredRun:
    """A latest row, with its track's earlier runs as (id, sequence, fingerprints) rows."""
    key = TrackKey(values["session_id"], values["participant_id"], values["kind"])
    runs = tuple(EarlierRun(int(i), int(seq), tuple(fps)) for i, seq, fps in earlier or ())
    return StoredRun(values["id"], values["version"], key, state_from_values(values), runs)


@dataclass(frozen=True, slots=True)
class RecordingRow:
    """A recording as the query API shows it."""

    id: int
    meeting_id: str
    session_id: str
    participant_id: str
    kind: str
    sequence: int
    status: str
    starting_at: datetime | None
    started_at: datetime | None
    stopping_at: datetime | None
    stopped_at: datetime | None
    failed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    files: list[dict[str, Any]]
    version: int


@dataclass(frozen=True, slots=True)
class TimelineRow:
    """One event of a recording's timeline."""

    id: int
    webhook_type: str
    received_at: datetime
    outcome: str


@dataclass(frozen=True, slots=True)
class RecordingWithTimeline:
    recording: RecordingRow
    events: list[TimelineRow]


@dataclass(frozen=True, slots=True)
class EventRow:
    """One delivery of the log, as `/v1/webhook-events` shows it."""

    id: int
    received_at: datetime
    webhook_type: str
    meeting_id: str | None
    session_id: str | None
    participant_id: str | None
    kind: str | None
    outcome: str
    fingerprint: str
    recording_id: int | None
    payload: dict[str, Any]
    error: list[dict[str, Any]] | None


def columns_of(row_type: type[Any], table: Table) -> list[Column[Any]]:
    """The table's columns named by the row type's fields, in field order."""
    return [table.c[field.name] for field in fields(row_type)]


RECORDING_ROW_COLUMNS = columns_of(RecordingRow, RECORDINGS)
TIMELINE_ROW_COLUMNS = columns_of(TimelineRow, EVENTS)
EVENT_ROW_COLUMNS = columns_of(EventRow, EVENTS)
