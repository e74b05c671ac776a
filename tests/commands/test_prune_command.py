"""`trackhook prune` as an operator runs it: its arguments, what it prints, and a run killed
part-way that the next run takes up."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.ledger.engine import create_engine
from app.ledger.rebuild import rebuild
from app.ledger.tables import EVENTS
from tests.commands.running import PROJECT_ROOT, clean_env, command, trackhook
from tests.support.aging import move_back
from tests.support.client import WebhookClient
from tests.support.payloads import file_entry, track_webhook


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(database_url=database_url))
    yield engine
    await engine.dispose()


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ([], "the following arguments are required: --older-than"),
        (["--older-than", "90"], "argument --older-than: not a duration: '90' (a whole"),
        (["--older-than", "90x"], "not a duration: '90x' (a whole number and a unit: 90d"),
        (["--older-than", "1.5d"], "not a duration: '1.5d'"),
        (["--older-than", "-1d"], "expected one argument"),
        (["--older-than=-1d"], "not a duration: '-1d'"),
        (["--older-than", "0d"], "argument --older-than: must be more than 0, not '0d'"),
        (["--older-than", "99999999999d"], "argument --older-than: too long: '99999999999d'"),
        (["--older-than", "90d", "--batch-size", "0"], "--batch-size: must be 1..50000, not 0"),
        (["--older-than", "90d", "--batch-size", "many"], "not a whole number: 'many'"),
    ],
)
def test_arguments_that_cannot_work_are_refused(
    arguments: list[str], says: str, tmp_path: Path
) -> None:
    database = tmp_path / "never-created.db"
    done = trackhook("prune", *arguments, env=clean_env(DATABASE_URL=f"sqlite:///{database}"))
    assert done.returncode == 2, done.stderr
    assert "trackhook prune: error: " in done.stderr and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not database.exists()


def test_an_unreachable_database_is_one_line() -> None:
    env = clean_env(DATABASE_URL="postgresql://postgres@127.0.0.1:9/trackhook")
    done = trackhook("prune", "--older-than", "90d", env=env)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("trackhook prune: cannot connect to PostgreSQL at 127.0.0.1:9")


async def finished(client: WebhookClient, session: str) -> None:
    await client.deliver(track_webhook("starting", session_id=session))
    await client.deliver(track_webhook("stopped", session_id=session, files=[file_entry(session)]))


async def count_events(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(EVENTS))).scalar())


async def test_dry_run_then_run_then_nothing_left(
    client: WebhookClient, engine: AsyncEngine, database_url: str
) -> None:
    for number in range(3):
        await finished(client, f"cli-{number}-{uuid.uuid4().hex[:6]}")
    await client.deliver({"webhookType": "session-started", "data": {"sessionId": "x"}})
    await client.deliver(track_webhook("started", session_id=f"young-{uuid.uuid4().hex[:6]}"))
    await move_back(engine, timedelta(days=91))
    await client.deliver(track_webhook("started", session_id=f"now-{uuid.uuid4().hex[:6]}"))
    env = clean_env(DATABASE_URL=database_url)

    dry = await asyncio.to_thread(trackhook, "prune", "--older-than", "90d", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0].startswith("cutoff: ")
    assert lines[1:5] == [
        "ignored deliveries to remove: 1",
        "rejected deliveries to remove: 0",
        "events of finished recordings to remove: 6 (3 recording(s), 3 track(s))",
        "rows to remove: 7",
    ]
    assert lines[-2].startswith("batches: 2, retried: 0; duration: ")
    assert lines[-1] == "dry run: nothing was changed"
    assert await count_events(engine) == 9

    real = await asyncio.to_thread(trackhook, "prune", "--older-than", "90d", env=env)
    assert real.returncode == 0, real.stderr
    assert "rows removed: 7" in real.stdout.splitlines()
    assert real.stdout.splitlines()[-1].endswith(" rows/s)")
    assert await count_events(engine) == 2

    again = await asyncio.to_thread(trackhook, "prune", "--older-than", "90d", env=env)
    assert "rows removed: 0" in again.stdout.splitlines(), again.stdout
    assert (await rebuild(engine, repair=False)).differences == []


async def test_a_killed_run_is_taken_up_by_the_next(
    client: WebhookClient, engine: AsyncEngine, database_url: str
) -> None:
    # Enough rows that the run cannot finish between two looks (150 recordings were not: a
    # loaded machine once let a SQLite run remove all 300 events before the kill).
    recordings = 600
    for number in range(recordings):
        await finished(client, f"kill-{number}-{uuid.uuid4().hex[:6]}")
    await move_back(engine, timedelta(days=2))
    env = clean_env(DATABASE_URL=database_url)
    process = subprocess.Popen(
        command("prune", "--older-than", "1d", "--batch-size", "1"),
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while await count_events(engine) == 2 * recordings:
            assert process.poll() is None and time.monotonic() < deadline
            await asyncio.sleep(0.001)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    left = await count_events(engine)
    assert 0 < left < 2 * recordings
    assert (await rebuild(engine, repair=False)).differences == []

    rest = await asyncio.to_thread(trackhook, "prune", "--older-than", "1d", env=env)
    assert rest.returncode == 0, rest.stderr
    assert f"rows removed: {left}" in rest.stdout.splitlines(), rest.stdout
    assert await count_events(engine) == 0
    assert (await rebuild(engine, repair=False)).differences == []
