"""Rebuild: recomputing the recordings from the event log finds no difference in a database
filled through the API, finds exactly the damage done to it in SQL, and repairs it."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.ledger.engine import create_engine
from app.ledger.rebuild import RebuildReport, insert_recording, rebuild
from app.ledger.tables import Recording, WebhookEvent
from app.rules.lifecycle import RecordingState, Status, TrackKey
from tests.property.strategies import Delivery, History, histories, sessions_of
from tests.support.client import WebhookClient
from tests.support.payloads import file_entry, track_webhook

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_runs = itertools.count()
HYPOTHESIS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def unique_prefix() -> str:
    return f"r{next(_runs)}{uuid.uuid4().hex[:6]}"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(database_url=database_url))
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine)


async def run_rebuild(engine: AsyncEngine, repair: bool = False) -> RebuildReport:
    return await rebuild(engine, repair=repair)


async def fill(client: WebhookClient, history: History) -> list[Delivery]:
    deliveries = history.deliveries(unique_prefix())
    for delivery in deliveries:
        await client.deliver(delivery.payload)
    return deliveries


async def deliver_stopped_with_files(client: WebhookClient) -> int:
    """A recording sure to have two files; returns its id."""
    session = f"files-{uuid.uuid4().hex[:8]}"
    await client.deliver(track_webhook("starting", session_id=session))
    files = [file_entry(f"{session}-1"), file_entry(f"{session}-2")]
    answer = await client.deliver(track_webhook("stopped", session_id=session, files=files))
    return int(answer["recordingId"])


async def recording_json(client: WebhookClient, recording_id: int) -> dict[str, Any]:
    response = await client.get(f"/v1/recordings/{recording_id}")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def repaired_as_before(repaired: dict[str, Any], before: dict[str, Any]) -> bool:
    """The document as it was before the damage, but for its version: a repair is a change,
    so the version grows (and the change feed shows the repaired state)."""
    return repaired["version"] > before["version"] and {**repaired, "version": 0} == {
        **before,
        "version": 0,
    }


def aspects(report: RebuildReport) -> set[tuple[int | None, int | None, str]]:
    return {(d.recording_id, d.event_id, d.aspect) for d in report.differences}


@settings(HYPOTHESIS, max_examples=8)
@given(history=histories())
async def test_rebuild_of_a_database_filled_through_the_api_finds_no_difference(
    client: WebhookClient,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    history: History,
) -> None:
    # Examples accumulate in one database, so each rebuild covers all of them so far.
    deliveries = await fill(client, history)
    report = await run_rebuild(engine)
    assert report.differences == [], report.lines()
    assert not report.repaired
    async with sessions() as session:
        stored = len(list(await session.scalars(select(Recording.id))))
        folded_events = len(
            list(
                await session.scalars(
                    select(WebhookEvent.id).where(
                        WebhookEvent.outcome.in_(["applied", "duplicate"])
                    )
                )
            )
        )
    assert report.events_read == folded_events
    assert report.recordings_stored == report.recordings_rebuilt == stored
    assert report.keys >= len({d.key for d in deliveries if d.key is not None})


@settings(HYPOTHESIS, max_examples=3)
@given(history=histories())
async def test_rebuild_reports_exactly_a_changed_status_and_a_dropped_file_and_repairs_them(
    client: WebhookClient,
    engine: AsyncEngine,
    history: History,
) -> None:
    deliveries = await fill(client, history)
    with_files = await deliver_stopped_with_files(client)
    clean = await run_rebuild(engine)
    assert clean.differences == [], clean.lines()

    page = (await client.get("/v1/recordings", sessionId=sessions_of(deliveries)[0])).json()
    status_victim = int(page["items"][0]["id"])
    before = {rid: await recording_json(client, rid) for rid in (status_victim, with_files)}

    new_status = "failed" if before[status_victim]["status"] != "failed" else "starting"
    async with engine.begin() as connection:
        await connection.execute(
            update(Recording).where(Recording.id == status_victim).values(status=new_status)
        )
        files = before[with_files]["files"]
        await connection.execute(
            update(Recording).where(Recording.id == with_files).values(files=files[1:])
        )

    report = await run_rebuild(engine)
    assert aspects(report) == {(status_victim, None, "status"), (with_files, None, "files")}, (
        report.lines()
    )
    described = "\n".join(report.lines())
    assert f"status is '{new_status}', the log gives '{before[status_victim]['status']}'" in (
        described
    )
    assert f"missing {files[0]['filePath']}" in described

    repaired = await run_rebuild(engine, repair=True)
    assert repaired.repaired
    assert aspects(repaired) == aspects(report)
    again = await run_rebuild(engine)
    assert again.differences == [], again.lines()
    for recording_id, document in before.items():
        assert repaired_as_before(await recording_json(client, recording_id), document)


async def test_rebuild_reports_and_removes_a_recording_no_event_explains(
    client: WebhookClient, engine: AsyncEngine
) -> None:
    await deliver_stopped_with_files(client)
    moment = datetime.now(UTC)
    ghost = RecordingState(
        1, Status.STARTED, moment, moment, {Status.STARTED: moment}, meeting_id="ghost-meeting"
    )
    key = TrackKey("ghost-session", "ghost", "video")
    async with engine.begin() as connection:
        ghost_id = await insert_recording(connection, key, ghost, True, txn=1)

    report = await run_rebuild(engine)
    assert aspects(report) == {(None, None, "count"), (ghost_id, None, "unexplained")}
    assert any("is explained by no event" in line for line in report.lines())

    assert (await run_rebuild(engine, repair=True)).repaired
    assert (await run_rebuild(engine)).differences == []
    assert (await client.get(f"/v1/recordings/{ghost_id}")).status_code == 404


async def test_rebuild_reports_and_relinks_an_event_pointing_at_the_wrong_recording(
    client: WebhookClient, engine: AsyncEngine
) -> None:
    first = await deliver_stopped_with_files(client)
    second = await deliver_stopped_with_files(client)
    timeline = (await recording_json(client, first))["events"]
    moved = int(timeline[0]["eventId"])
    async with engine.begin() as connection:
        await connection.execute(
            update(WebhookEvent).where(WebhookEvent.id == moved).values(recording_id=second)
        )

    report = await run_rebuild(engine)
    assert aspects(report) == {(second, moved, "recording_id")}, report.lines()

    await run_rebuild(engine, repair=True)
    assert (await run_rebuild(engine)).differences == []
    assert (await recording_json(client, first))["events"] == timeline


async def test_rebuild_reports_a_recording_whose_event_was_never_applied_to_it(
    client: WebhookClient, engine: AsyncEngine
) -> None:
    """A lost update (the event is logged, the recording never saw it) is a difference."""
    session_id = f"lost-{uuid.uuid4().hex[:8]}"
    await client.deliver(track_webhook("started", session_id=session_id))
    answer = await client.deliver(track_webhook("stopping", session_id=session_id))
    recording_id = int(answer["recordingId"])
    before = await recording_json(client, recording_id)
    async with engine.begin() as connection:
        row = (
            await connection.execute(select(Recording).where(Recording.id == recording_id))
        ).one()
        await connection.execute(
            update(Recording)
            .where(Recording.id == recording_id)
            .values(
                status="started",
                stopping_at=None,
                updated_at=row.started_at,
                event_fingerprints=row.event_fingerprints[:1],
            )
        )

    report = await run_rebuild(engine)
    assert Counter(d.aspect for d in report.differences) == Counter(
        ["status", "stopping_at", "updated_at", "event_fingerprints"]
    ), report.lines()
    assert {d.recording_id for d in report.differences} == {recording_id}
    await run_rebuild(engine, repair=True)
    assert repaired_as_before(await recording_json(client, recording_id), before)


def trackhook_command() -> list[str]:
    script = Path(sys.executable).parent / "trackhook"
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


async def run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [*trackhook_command(), "rebuild", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_trackhook_rebuild_command(
    client: WebhookClient, engine: AsyncEngine, database_url: str
) -> None:
    recording_id = await deliver_stopped_with_files(client)

    clean = await run_cli(database_url)
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.splitlines()[:5] == [
        "events read: 2",
        "keys: 1",
        "recordings rebuilt: 1",
        "recordings stored: 1",
        "0 difference(s)",
    ]

    async with engine.begin() as connection:
        await connection.execute(
            update(Recording).where(Recording.id == recording_id).values(status="started")
        )
    found = await run_cli(database_url)
    assert found.returncode == 1, found.stderr
    lines = found.stdout.splitlines()
    assert lines[4] == "1 difference(s)"
    assert lines[5].startswith(f"- recording {recording_id} (")
    assert lines[5].endswith("status is 'started', the log gives 'stopped'")
    assert len(lines) == 6

    repaired = await run_cli(database_url, "--repair")
    assert repaired.returncode == 0, repaired.stderr
    assert "1 difference(s), repaired" in repaired.stdout.splitlines()

    after = await run_cli(database_url)
    assert after.returncode == 0, after.stderr
    assert "0 difference(s)" in after.stdout.splitlines()
    assert (await recording_json(client, recording_id))["status"] == "stopped"
