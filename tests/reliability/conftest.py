"""Fixtures and checks for the reliability tests: real server processes on real PostgreSQL
(a private cluster they may stop, or a fresh database on the shared server)."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from app.ledger.rows import TIMESTAMP_COLUMNS
from app.rules.lifecycle import RecordingState, TrackEvent, fold
from app.videosdk.documents import fingerprint_of, track_event_of, track_key_of
from app.videosdk.schemas import TRACK_WEBHOOK_TYPES, track_webhook_adapter
from tests.conftest import note_tested, postgres_unavailable
from tests.reliability.private_postgres import PostgresUnavailable, PrivatePostgres
from tests.support.databases import asyncpg_dsn
from tests.support.deliveries import WEBHOOK_PATH, Delivery, post_delivery, server_env

__all__ = ["WEBHOOK_PATH", "Delivery", "post_delivery", "server_env"]


def assert_unavailable(response: httpx.Response) -> None:
    """The answer a webhook sender must get while the database is down: retry later."""
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "database_unavailable", response.text
    retry_after = response.headers.get("retry-after")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1


async def wait_ready(client: httpx.AsyncClient, timeout: float) -> int:
    """Poll /readyz until 200; returns the number of polls (fails after `timeout` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    polls = 0
    last = "no answer"
    while loop.time() < deadline:
        polls += 1
        try:
            response = await client.get("/readyz", timeout=5)
            if response.status_code == 200:
                return polls
            last = f"{response.status_code} {response.text}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        await asyncio.sleep(0.2)
    raise AssertionError(f"/readyz not 200 after {timeout}s and {polls} polls; last: {last}")


# --- the database as the tests see it ------------------------------------------------------


async def logged_fingerprints(database_url: str) -> dict[int, str]:
    """event id -> fingerprint for the whole log."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        rows = await connection.fetch("SELECT id, fingerprint FROM webhook_events")
    finally:
        await connection.close()
    return {row["id"]: row["fingerprint"] for row in rows}


def missing_acknowledged(
    acknowledged: Iterable[tuple[int, str]], logged: dict[int, str]
) -> list[tuple[int, str]]:
    """(event id, fingerprint) pairs answered 2xx that the log does not hold as such."""
    return [(event_id, fp) for event_id, fp in acknowledged if logged.get(event_id) != fp]


@dataclass(frozen=True)
class LogSummary:
    events: int
    outcomes: dict[str, int]
    keys: int
    recordings: int

    @property
    def applied(self) -> int:
        return self.outcomes.get("applied", 0)


def _expected_columns(state: RecordingState) -> dict[str, Any]:
    columns: dict[str, Any] = {
        column: state.received.get(status) for status, column in TIMESTAMP_COLUMNS.items()
    }
    columns.update(
        sequence=state.sequence,
        status=state.status.value,
        created_at=state.created_at,
        updated_at=state.updated_at,
        files=[dict(entry) for entry in state.files],
        event_fingerprints=list(state.fingerprints),
    )
    return columns


def _stored_columns(row: asyncpg.Record) -> dict[str, Any]:
    columns: dict[str, Any] = {column: row[column] for column in TIMESTAMP_COLUMNS.values()}
    columns.update(
        sequence=row["sequence"],
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        files=orjson.loads(row["files"]),
        event_fingerprints=orjson.loads(row["event_fingerprints"]),
    )
    return columns


async def check_log_and_state(database_url: str) -> LogSummary:
    """Nothing half-written: every applied event has its recording, and the recordings of
    each key are exactly the lifecycle fold of its logged events in id order."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            event_rows = await connection.fetch(
                "SELECT id, received_at, webhook_type, outcome, fingerprint, recording_id, "
                "payload, body FROM webhook_events ORDER BY id"
            )
            recording_rows = await connection.fetch(
                "SELECT * FROM recordings ORDER BY session_id, participant_id, kind, sequence"
            )
    finally:
        await connection.close()

    problems: list[str] = []
    recordings_by_id = {row["id"]: row for row in recording_rows}
    recordings_by_key: dict[tuple[str, str, str], list[asyncpg.Record]] = defaultdict(list)
    for row in recording_rows:
        recordings_by_key[(row["session_id"], row["participant_id"], row["kind"])].append(row)

    events_by_key: dict[tuple[str, str, str], list[tuple[asyncpg.Record, TrackEvent]]]
    events_by_key = defaultdict(list)
    for row in event_rows:
        payload = orjson.loads(row["payload"])
        if fingerprint_of(payload, row["body"]) != row["fingerprint"]:
            problems.append(f"event {row['id']}: payload does not match its fingerprint")
        if row["outcome"] in ("applied", "duplicate"):
            if row["webhook_type"] not in TRACK_WEBHOOK_TYPES:
                problems.append(f"event {row['id']}: {row['outcome']} but not a track webhook")
                continue
            if row["recording_id"] not in recordings_by_id:
                problems.append(f"event {row['id']}: {row['outcome']} without its recording")
            webhook = track_webhook_adapter.validate_python(payload)
            track = track_key_of(webhook)
            event = track_event_of(webhook, row["fingerprint"], row["received_at"])
            events_by_key[(track.session_id, track.participant_id, track.kind)].append((row, event))
        elif row["recording_id"] is not None:
            problems.append(f"event {row['id']}: {row['outcome']} but linked to a recording")

    for key in recordings_by_key.keys() - events_by_key.keys():
        problems.append(f"{key}: recordings without any logged event")
    for key, logged in events_by_key.items():
        track_events = [event for _row, event in logged]
        expected = fold(track_events)
        stored = recordings_by_key.get(key, [])
        if [row["outcome"] for row, _event in logged] != list(expected.outcomes):
            problems.append(f"{key}: logged outcomes differ from the fold's")
        if len(stored) != len(expected.recordings):
            problems.append(f"{key}: {len(stored)} recordings, the fold {len(expected.recordings)}")
            continue
        for row, state in zip(stored, expected.recordings, strict=True):
            if _stored_columns(row) != _expected_columns(state):
                problems.append(
                    f"{key} #{state.sequence}: stored {_stored_columns(row)} "
                    f"!= folded {_expected_columns(state)}"
                )
            if row["is_latest"] != (row is stored[-1]):
                problems.append(f"{key} #{state.sequence}: is_latest is {row['is_latest']}")
        # Each event must be linked to the recording it was folded into (a retry of an
        # earlier run's delivery belongs to that run).
        for (row, _event), number in zip(logged, expected.sequences, strict=True):
            if row["recording_id"] != stored[number - 1]["id"]:
                problems.append(f"event {row['id']}: linked to the wrong recording of {key}")

    assert not problems, f"{len(problems)} problems, first ones:\n" + "\n".join(problems[:10])
    return LogSummary(
        events=len(event_rows),
        outcomes=dict(Counter(row["outcome"] for row in event_rows)),
        keys=len(events_by_key),
        recordings=len(recording_rows),
    )


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started private cluster, always stopped and removed afterwards."""
    try:
        cluster = PrivatePostgres()
    except PostgresUnavailable as exc:
        postgres_unavailable(f"cannot run a private PostgreSQL: {exc}")
    with cluster:
        note_tested("postgresql")
        yield cluster
