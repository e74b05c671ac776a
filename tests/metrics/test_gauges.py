"""The gauges: recordings open and stuck and the feed's lag (read from the database, cached
for METRICS_CACHE_SECONDS), the connection pools and the feed's waiters (read at each
scrape), and the group writer's sizes and fallbacks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import create_async_engine

from app.ledger.tables import RECORDINGS
from tests.conftest import ClientFactory
from tests.metrics.conftest import API_TOKEN, METRICS_TOKEN, Scrape, bearer, scrape
from tests.support.client import WebhookClient
from tests.support.databases import asyncpg_dsn
from tests.support.payloads import track_webhook

OPEN = "trackhook_recordings_open"
STUCK = "trackhook_recordings_stuck"


async def _age(database_url: str, sessions: list[str], age: timedelta) -> None:
    """As if nothing had reached these recordings for `age` (what time passing does)."""
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(RECORDINGS)
                .where(RECORDINGS.c.session_id.in_(sessions))
                .values(updated_at=datetime.now(UTC) - age)
            )
    finally:
        await engine.dispose()


async def _until(
    client: WebhookClient, holds: Callable[[Scrape], bool], timeout: float = 10.0
) -> Scrape:
    deadline = time.monotonic() + timeout
    while True:
        answer = await scrape(client.http)
        if holds(answer) or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.05)


async def test_open_and_stuck_recordings(make_client: ClientFactory, database_url: str) -> None:
    cache = 2.0
    client = await make_client(metrics_token=METRICS_TOKEN, metrics_cache_seconds=cache)
    empty = await scrape(client.http)  # reads the (empty) database: the cache starts now
    read_at = time.monotonic()
    statuses = ["starting", "started", "stopping", "stopped", "failed", "starting"]
    for n, status in enumerate(statuses):
        await client.deliver(track_webhook(status, session_id=f"gauge-{n}"))
    # Late: applied (its time is recorded), but the recording stays `stopping`.
    late = await client.deliver(track_webhook("started", session_id="gauge-2"))
    assert late["status"] == "applied"
    # Two of the open ones have heard nothing for seven hours (the default is six).
    await _age(database_url, ["gauge-0", "gauge-1"], timedelta(hours=7))

    cached = await scrape(client.http)
    if time.monotonic() - read_at < cache:  # a slow machine may have passed it already
        assert cached.value(OPEN, status="starting") == 0
    await asyncio.sleep(cache + 0.1)
    now = await scrape(client.http)

    for status in ("starting", "started", "stopping"):
        assert empty.has(OPEN, status=status), status
        assert empty.value(OPEN, status=status) == 0
    assert now.value(OPEN, status="starting") == 2
    assert now.value(OPEN, status="started") == 1
    assert now.value(OPEN, status="stopping") == 1
    assert not now.has(OPEN, status="stopped")  # finished ones are counted as they finish
    assert now.value(STUCK) == 2
    read = now.value("trackhook_database_stats_timestamp_seconds")
    assert abs(read - time.time()) < cache + 5
    transitions = "trackhook_recording_transitions_total"
    for status, count in (("starting", 2), ("started", 1), ("stopping", 1), ("stopped", 1)):
        assert now.minus(empty, transitions, status=status) == count, status


async def test_feed_lag_is_the_oldest_writing_transaction(
    make_client: ClientFactory, database_url: str, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite's writers are serialised: the feed has no lag to measure")
    client = await make_client(metrics_token=METRICS_TOKEN, metrics_cache_seconds=1)
    await scrape(client.http)
    holder = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with holder.transaction():
            await holder.fetchval("SELECT pg_current_xact_id()")  # it has written
            await asyncio.sleep(1.5)
            held = await _until(client, lambda s: s.value("trackhook_feed_lag_seconds") >= 1.5)
    finally:
        await holder.close()

    assert held.value("trackhook_feed_lag_seconds") >= 1.5


async def test_pools_and_feed_waiters(make_client: ClientFactory, backend: str) -> None:
    client = await make_client(
        metrics_token=METRICS_TOKEN, api_tokens=[API_TOKEN], db_pool_size=3, db_read_pool_size=2
    )
    waiting = asyncio.create_task(
        client.http.get("/v1/changes?cursor=now&wait=10", headers=bearer(API_TOKEN))
    )
    try:
        during = await _until(client, lambda s: s.value("trackhook_feed_waiters") >= 1)
        await client.deliver(track_webhook("starting", session_id="wakes-the-waiter"))
        woken = await asyncio.wait_for(waiting, 10)
    finally:
        waiting.cancel()
    after = await scrape(client.http)

    assert during.value("trackhook_feed_waiters") == 1
    assert woken.status_code == 200 and woken.json()["items"], woken.text
    assert after.value("trackhook_feed_waiters") == 0
    size, in_use = "trackhook_db_pool_size", "trackhook_db_pool_in_use"
    if backend == "postgresql":
        assert after.value(size, pool="writes") == 3
        assert after.value(size, pool="reads") == 2
        assert after.value(size, pool="listen") == 1
        listening = await _until(client, lambda s: s.value(in_use, pool="listen") == 1)
        assert listening.value(in_use, pool="listen") == 1
    else:
        assert after.value(size, pool="writes") > 0
    # A scrape holds no connection of the intake's.
    assert after.value(in_use, pool="writes") == 0
    assert after.value("trackhook_db_pool_waiting", pool="writes") == 0


async def test_pool_waiting_and_the_fallback_to_the_locked_path(
    make_client: ClientFactory, database_url: str, backend: str
) -> None:
    """A track whose row is held elsewhere: the group writer leaves it to the locked writer
    (a fallback), which waits for the row on the pool's only connection, so the next
    delivery waits for the pool."""
    if backend != "postgresql":
        pytest.skip("the group writer is PostgreSQL's")
    client = await make_client(
        metrics_token=METRICS_TOKEN, db_pool_size=1, db_statement_timeout_seconds=30
    )
    held = await client.deliver(track_webhook("starting", session_id="held-track"))
    before = await scrape(client.http)
    holder = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with holder.transaction():
            await holder.execute(
                "SELECT 1 FROM recordings WHERE id = $1 FOR UPDATE", int(held["recordingId"])
            )
            blocked = asyncio.create_task(
                client.post(track_webhook("started", session_id="held-track"))
            )
            # Handed to the locked writer, which waits for the row on the only connection.
            fallbacks = "trackhook_group_fallbacks_total"
            fell_back = await _until(
                client,
                lambda s: (
                    s.minus(before, fallbacks, reason="not_written") == 1
                    and s.value("trackhook_db_pool_in_use", pool="writes") == 1
                ),
            )
            other = asyncio.create_task(
                client.post(track_webhook("starting", session_id="free-track"))
            )
            waiting = "trackhook_db_pool_waiting"
            during = await _until(client, lambda s: s.value(waiting, pool="writes") >= 1)
        answers = await asyncio.wait_for(asyncio.gather(blocked, other), 30)
    finally:
        await holder.close()
    after = await scrape(client.http)

    assert fell_back.value("trackhook_db_pool_in_use", pool="writes") == 1
    assert during.value(waiting, pool="writes") == 1
    assert during.value("trackhook_db_pool_in_use", pool="writes") == 1
    assert [answer.json()["status"] for answer in answers] == ["applied", "applied"]
    assert after.minus(before, fallbacks, reason="not_written") == 1
    assert after.minus(before, fallbacks, reason="group_failed") == 0
    groups = "trackhook_group_commit_deliveries_count"
    assert after.minus(before, groups) >= 1  # the free track's, at least
    assert after.value(waiting, pool="writes") == 0
