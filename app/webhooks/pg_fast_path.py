"""PostgreSQL fast path of intake: one unlocked read, then one atomic statement.

The common way (BEGIN, SELECT ... FOR UPDATE, UPDATE, INSERT, COMMIT) costs five round
trips. Here the transition is decided in Python on an unlocked read and written by one
statement (a data-modifying CTE, hence one implicit transaction and one commit) that
only takes effect if the recording's `version` is still the one we read. A concurrent
writer makes that statement touch no row; the caller then falls back to the locked path.
The statement locks the row it writes, so per key the event ids still follow apply order.
Statements run on the asyncpg connection outside any transaction, so each one commits
by itself: no BEGIN or COMMIT round trips.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from app.recordings.lifecycle import Outcome, RecordingState, Status, Transition
from app.recordings.repository import TIMESTAMP_COLUMNS, TrackKey
from app.webhooks.repository import TrackDelivery

_STATE_TIMESTAMPS = [TIMESTAMP_COLUMNS[status] for status in Status]

READ_LATEST = f"""
SELECT id, version, sequence, status, {", ".join(_STATE_TIMESTAMPS)}, created_at, updated_at,
       files::text AS files, event_fingerprints::text AS event_fingerprints
FROM recordings
WHERE session_id = $1 AND participant_id = $2 AND kind = $3 AND is_latest
"""

# The event row always takes the parameters $1..$9; the recording part follows.
_EVENT_COLUMNS = (
    "received_at, webhook_type, meeting_id, session_id, participant_id, kind, "
    "outcome, fingerprint, payload, recording_id"
)
_EVENT_VALUES = (
    "$1::timestamptz, $2::text, $3::text, $4::text, $5::text, $6::text, "
    "$7::text, $8::text, $9::json"
)


def _append_event_from(source: str) -> str:
    return (
        f"INSERT INTO webhook_events ({_EVENT_COLUMNS}) "
        f"SELECT {_EVENT_VALUES}, {source}.id FROM {source} "
        "RETURNING id, recording_id"
    )


_STATE_COLUMNS = ["status", *_STATE_TIMESTAMPS, "updated_at", "files", "event_fingerprints"]
_STATE_CASTS = ["text"] + ["timestamptz"] * (len(_STATE_TIMESTAMPS) + 1) + ["json", "json"]
_NEW_COLUMNS = ", ".join(["sequence", "created_at", *_STATE_COLUMNS])


def _state_placeholders(first: int) -> list[str]:
    """Placeholders of a recording state: $first..; then sequence and created_at for a new row."""
    casts = [*_STATE_CASTS, "int", "timestamptz"]
    return [f"${first + i}::{cast}" for i, cast in enumerate(casts)]


# After the event's $1..$9: $10 = recording id, $11 = version read, then the state.
_WRITE = _state_placeholders(12)
_FIRST = _state_placeholders(10)
_NEW_VALUES = ", ".join([*_WRITE[-2:], *_WRITE[: len(_STATE_COLUMNS)]])

DUPLICATE = (
    "WITH target AS (SELECT id FROM recordings WHERE id = $10 AND version = $11 FOR UPDATE) "
    + _append_event_from("target")
)

UPDATE = (
    "WITH target AS (UPDATE recordings SET "
    + ", ".join(f"{c} = {p}" for c, p in zip(_STATE_COLUMNS, _WRITE, strict=False))
    + ", version = version + 1 WHERE id = $10 AND version = $11 RETURNING id) "
    + _append_event_from("target")
)

OPEN_NEXT = (
    "WITH previous AS (UPDATE recordings SET is_latest = false, version = version + 1 "
    "WHERE id = $10 AND version = $11 "
    "RETURNING meeting_id, session_id, participant_id, kind), "
    "target AS (INSERT INTO recordings (meeting_id, session_id, participant_id, kind, "
    f"is_latest, version, {_NEW_COLUMNS}) "
    f"SELECT meeting_id, session_id, participant_id, kind, true, 1, {_NEW_VALUES} "
    "FROM previous RETURNING id) " + _append_event_from("target")
)

OPEN_FIRST = (
    "WITH target AS (INSERT INTO recordings (meeting_id, session_id, participant_id, kind, "
    f"is_latest, version, {_NEW_COLUMNS}) "
    "VALUES ($3, $4, $5, $6, true, 1, "
    + ", ".join([*_FIRST[-2:], *_FIRST[: len(_STATE_COLUMNS)]])
    + ") ON CONFLICT DO NOTHING RETURNING id) "
    + _append_event_from("target")
)


@dataclass(frozen=True, slots=True)
class LatestRecording:
    id: int
    version: int
    state: RecordingState


def latest_from_row(values: Mapping[str, Any]) -> LatestRecording:
    received = {
        status: stamp
        for status, column in TIMESTAMP_COLUMNS.items()
        if (stamp := values[column]) is not None
    }
    state = RecordingState(
        sequence=values["sequence"],
        status=Status(values["status"]),
        created_at=values["created_at"],
        updated_at=values["updated_at"],
        received=received,
        files=tuple(orjson.loads(values["files"])),
        fingerprints=tuple(orjson.loads(values["event_fingerprints"])),
    )
    return LatestRecording(values["id"], values["version"], state)


def _json_text(value: object) -> str:
    return orjson.dumps(value).decode()


def _state_params(state: RecordingState) -> list[object]:
    return [
        state.status.value,
        *(state.received.get(status) for status in Status),
        state.updated_at,
        _json_text([dict(entry) for entry in state.files]),
        _json_text(list(state.fingerprints)),
    ]


def _new_row_params(state: RecordingState) -> list[object]:
    return [*_state_params(state), state.sequence, state.created_at]


def write_plan(
    latest: LatestRecording | None,
    step: Transition,
    delivery: TrackDelivery,
    payload_json: str,
) -> tuple[str, list[object]]:
    """The one statement (and its parameters) that records `step`."""
    identity = delivery.identity
    params: list[object] = [
        delivery.event.received_at,
        delivery.webhook_type,
        identity.meeting_id,
        identity.session_id,
        identity.participant_id,
        identity.kind,
        step.outcome.value,
        delivery.event.fingerprint,
        payload_json,
    ]
    if latest is None:
        assert step.opened
        return OPEN_FIRST, [*params, *_new_row_params(step.recording)]
    params += [latest.id, latest.version]
    if step.opened:
        return OPEN_NEXT, [*params, *_new_row_params(step.recording)]
    if step.outcome is Outcome.DUPLICATE:
        return DUPLICATE, params
    return UPDATE, [*params, *_state_params(step.recording)]


def key_params(key: TrackKey) -> tuple[str, str, str]:
    return key.session_id, key.participant_id, key.kind
