"""PostgreSQL group commit: one locked recording must not hold up other tracks' webhooks,
and the locked track's webhook is still applied once the lock goes; a track's deliveries
that arrive together are folded and written by one statement."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest
from fastapi import FastAPI

from app.ledger.queries import EventFilter, get_recording, list_events
from app.main import create_app
from tests.conftest import empty_database, make_settings
from tests.support.client import WebhookClient
from tests.support.databases import asyncpg_dsn
from tests.support.payloads import file_entry, track_webhook
from tests.support.signing import Signer

# Far longer than the group's lock timeout (200 ms), far shorter than a hang.
UNBLOCKED_WITHIN_SECONDS = 10


# Group commit is PostgreSQL's; SQLite serialises every writer anyway.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_locked_track_does_not_hold_up_the_others(
    client: WebhookClient, database_url: str
) -> None:
    locked = await client.deliver(track_webhook("starting", session_id="locked-session"))
    holder = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute(
            "SELECT id FROM recordings WHERE id = $1 FOR UPDATE", int(locked["recordingId"])
        )
        waiting = asyncio.create_task(
            client.post(track_webhook("started", session_id="locked-session"))
        )
        others = [
            asyncio.create_task(client.post(track_webhook("started", session_id=f"free-{n}")))
            for n in range(5)
        ]
        done, _ = await asyncio.wait(others, timeout=UNBLOCKED_WITHIN_SECONDS)
        assert len(done) == len(others), "other tracks waited on the locked one"
        assert all(task.result().status_code == 200 for task in others)
        assert not waiting.done(), "the locked track's webhook was answered under the lock"
        await transaction.rollback()
    finally:
        await holder.close()
    answer = await asyncio.wait_for(waiting, UNBLOCKED_WITHIN_SECONDS)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "applied"
    detail = (await client.get(f"/v1/recordings/{locked['recordingId']}")).json()
    assert detail["status"] == "started"


@pytest.fixture
async def started_app(database_url: str, signer: Signer) -> AsyncIterator[FastAPI]:
    await empty_database(database_url)
    app = create_app(make_settings(database_url, signer))
    async with app.router.lifespan_context(app):
        yield app


async def log_rows(database_url: str, event_ids: list[int]) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        return await connection.fetch(
            "SELECT id, outcome, recording_id, xmin::text AS txn FROM webhook_events "
            "WHERE id = ANY($1::bigint[]) ORDER BY id",
            event_ids,
        )
    finally:
        await connection.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_tracks_burst_is_folded_and_written_in_one_commit(
    started_app: FastAPI, database_url: str, signer: Signer
) -> None:
    """A track's deliveries that arrive together meet in one group: folded in arrival order,
    one write of the recording, one log row each, one commit, each answered its own outcome."""
    intake = started_app.state.intake
    bodies = [
        orjson.dumps(track_webhook(status, session_id="burst"))
        for status in ("starting", "started", "started", "stopping", "stopped")
    ]
    answers = await asyncio.gather(*(intake.receive(body, [signer.sign(body)]) for body in bodies))
    assert [a.outcome.value for a in answers] == [
        "applied", "applied", "duplicate", "applied", "applied"
    ]  # fmt: skip
    assert len({a.recording_id for a in answers}) == 1
    rows = await log_rows(database_url, [a.event_id for a in answers])
    assert [row["id"] for row in rows] == [a.event_id for a in answers]  # ids in arrival order
    assert len({row["txn"] for row in rows}) == 1, "the burst took more than one commit"
    assert [a.after.status.value for a in answers if a.after] == [
        "starting", "started", "stopping", "stopped"
    ]  # fmt: skip
    async with started_app.state.ledger.reader() as reader:
        found = await get_recording(reader, answers[0].recording_id)
    assert found is not None and found.recording.version == 4  # one per applied event


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_burst_opening_two_runs_leaves_the_second_to_the_next_group(
    started_app: FastAPI, database_url: str, signer: Signer
) -> None:
    """One group opens at most one run of a track; what follows the second opening is
    written by the next group, still in arrival order."""
    intake = started_app.state.intake
    statuses = ("starting", "stopped", "starting", "stopped")
    bodies = [
        orjson.dumps(track_webhook(status, session_id="two-runs", files=[file_entry(f"run-{n}")]))
        for n, status in enumerate(statuses)
    ]
    answers = await asyncio.gather(*(intake.receive(body, [signer.sign(body)]) for body in bodies))
    assert [a.outcome.value for a in answers] == ["applied"] * 4
    first, second = answers[0].recording_id, answers[2].recording_id
    assert [a.recording_id for a in answers] == [first, first, second, second]
    assert first != second
    rows = await log_rows(database_url, [a.event_id for a in answers])
    assert [row["id"] for row in rows] == [a.event_id for a in answers]
    txns = [row["txn"] for row in rows]
    assert txns[0] == txns[1] and txns[2] == txns[3] and txns[1] != txns[2]
    assert [a.after.sequence for a in answers if a.after] == [1, 1, 2, 2]


async def test_a_nul_anywhere_in_a_payload_is_stored_and_costs_its_neighbours_nothing(
    started_app: FastAPI, database_url: str, signer: Signer, backend: str
) -> None:
    """Issue 10, finding 5: a `\\u0000` in a payload failed the whole group, and every one of
    its deliveries was written again alone. JSON keeps the escape; so does the log."""
    intake = started_app.state.intake
    poisoned = track_webhook(
        "stopped", session_id="nul-1", files=[{**file_entry("a"), "filePath": "/v/a\x00.mp4"}]
    )
    poisoned["extra"] = "nul \x00 here"
    # Its neighbours: other deliveries of the same track, so that they all meet in one group.
    neighbours = [{**track_webhook("stopping", session_id="nul-1"), "n": n} for n in range(5)]
    bodies = [orjson.dumps(poisoned)] + [orjson.dumps(body) for body in neighbours]
    answers = await asyncio.gather(*(intake.receive(body, [signer.sign(body)]) for body in bodies))
    assert [a.outcome.value for a in answers] == ["applied"] * 6
    async with started_app.state.ledger.reader() as reader:
        found = await get_recording(reader, answers[0].recording_id)
        page = await list_events(reader, EventFilter(session_id="nul-1"), 10, None)
    assert found is not None and found.recording.files[0]["filePath"] == "/v/a\x00.mp4"
    (logged,) = (event for event in page.items if event.id == answers[0].event_id)
    assert logged.payload["extra"] == "nul \x00 here"
    if backend == "postgresql":
        rows = await log_rows(database_url, [a.event_id for a in answers])
        assert len({row["txn"] for row in rows}) == 1, "the group fell apart"
