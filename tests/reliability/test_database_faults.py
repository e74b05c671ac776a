"""Database faults on a real server process: every wait is bounded and every "cannot store
now" is a 503 with Retry-After and one log line (never a 500, never a traceback), readiness
says so, and reads on their own connections cannot starve intake (issue 10, items 1-3)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.support.databases import admin_url, asyncpg_dsn
from tests.support.deliveries import Delivery, post_delivery, server_env
from tests.support.payloads import track_webhook
from tests.support.server import PROJECT_ROOT, ServerProcess
from tests.support.signing import Signer

BOUND_SECONDS = 1  # DB_STATEMENT_TIMEOUT_SECONDS and DB_READ_TIMEOUT_SECONDS of the server
ANSWERED_WITHIN = 4.0  # the bound, the pool wait, a retry: far below the 30 s of a held lock


@pytest.fixture
async def server(
    shared_database_url: str, signer: Signer, servers: list[ServerProcess], tmp_path: Path
) -> AsyncIterator[ServerProcess]:
    process = ServerProcess(
        env=server_env(
            shared_database_url,
            signer,
            DB_STATEMENT_TIMEOUT_SECONDS=str(BOUND_SECONDS),
            DB_READ_TIMEOUT_SECONDS=str(BOUND_SECONDS),
            DB_CONNECT_TIMEOUT_SECONDS="2",
            LOG_LEVEL="INFO",
        ),
        workers=1,
        log_path=tmp_path / "server.log",
    )
    servers.append(process)
    await asyncio.to_thread(process.start)
    yield process


def database_name(url: str) -> str:
    name = make_url(url).database
    assert name
    return name


async def admin(url: str) -> asyncpg.Connection:
    """A connection to the server's maintenance database (not the one under test)."""
    return await asyncpg.connect(asyncpg_dsn(admin_url()), timeout=10)


async def terminate_backends(connection: asyncpg.Connection, database: str) -> None:
    await connection.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = $1 AND pid <> pg_backend_pid()",
        database,
    )


async def timed_post(
    client: httpx.AsyncClient, signer: Signer, session: str, kind: str = "started"
) -> tuple[httpx.Response, float]:
    payload = (
        track_webhook(kind, session_id=session)
        if kind != "ignored"
        else {"webhookType": "session-started", "data": {"sessionId": session}}
    )
    started = time.monotonic()
    response = await post_delivery(client, Delivery.signed(signer, payload))
    return response, time.monotonic() - started


def assert_retry_later(response: httpx.Response, error: str = "database_unavailable") -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"] == error, response.text
    assert response.headers["retry-after"].isdigit()


def server_report(server: ServerProcess) -> str:
    """Whether the server still runs, and the end of its log: what a failure needs."""
    assert server.process is not None and server.log_path is not None
    code = server.process.poll()
    state = "running" if code is None else f"exited with {code}"
    tail = server.log_path.read_text(errors="replace")[-6000:]
    return f"server {state}; the end of its log:\n{tail}"


def tracebacks(server: ServerProcess) -> int:
    assert server.log_path is not None
    return server.log_path.read_text(errors="replace").count("Traceback")


async def test_a_held_lock_costs_a_bounded_wait_then_503(
    server: ServerProcess, shared_database_url: str, signer: Signer
) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        ok, _ = await timed_post(client, signer, "lock-before")
        assert ok.status_code == 200, ok.text
        holder = await asyncpg.connect(asyncpg_dsn(shared_database_url), timeout=10)
        try:
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute("LOCK TABLE recordings IN ACCESS EXCLUSIVE MODE")
            track, track_took = await timed_post(client, signer, "lock-during")
            ignored, ignored_took = await timed_post(client, signer, "lock-ignored", "ignored")
            started = time.monotonic()
            listed = await client.get("/v1/recordings")
            listed_took = time.monotonic() - started
            started = time.monotonic()
            ready = await client.get("/readyz")
            ready_took = time.monotonic() - started
            await transaction.rollback()
        finally:
            await holder.close()
        after, _ = await timed_post(client, signer, "lock-during")

    print(
        f"\nlock held: webhook 503 after {track_took:.2f}s, ignored webhook "
        f"{ignored.status_code} after {ignored_took:.2f}s, /v1 {listed.status_code} after "
        f"{listed_took:.2f}s, /readyz {ready.status_code} after {ready_took:.2f}s"
    )
    assert_retry_later(track)
    assert track_took < ANSWERED_WITHIN
    assert ignored.status_code in (200, 503) and ignored_took < ANSWERED_WITHIN
    assert_retry_later(listed)
    assert listed_took < ANSWERED_WITHIN
    assert_retry_later(ready)
    assert ready_took < 1.0  # the probe never waits for a lock (NOWAIT)
    assert after.status_code == 200, after.text  # the retry goes through once it is gone
    assert tracebacks(server) == 0


async def test_a_database_refusing_connections_is_503_everywhere(
    server: ServerProcess, shared_database_url: str, signer: Signer
) -> None:
    database = database_name(shared_database_url)
    maintenance = await admin(shared_database_url)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        assert (await timed_post(client, signer, "refuse-before"))[0].status_code == 200
        try:
            await maintenance.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            await terminate_backends(maintenance, database)
            answers = [(await timed_post(client, signer, f"refused-{n}"))[0] for n in range(6)]
            ready = await client.get("/readyz")
            listed = await client.get("/v1/recordings")
        finally:
            await maintenance.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        recovered = await timed_post(client, signer, "refused-0")
    await maintenance.close()

    print(f"\nrefusing connections: webhooks {Counter(a.status_code for a in answers)}")
    for answer in answers:
        assert_retry_later(answer)
    assert_retry_later(ready)
    assert_retry_later(listed)
    assert recovered[0].status_code == 200, recovered[0].text
    assert tracebacks(server) == 0


async def test_a_read_only_database_is_503_and_not_ready(
    server: ServerProcess, shared_database_url: str, signer: Signer
) -> None:
    database = database_name(shared_database_url)
    maintenance = await admin(shared_database_url)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        assert (await timed_post(client, signer, "ro-before"))[0].status_code == 200
        try:
            await maintenance.execute(
                f'ALTER DATABASE "{database}" SET default_transaction_read_only = on'
            )
            await terminate_backends(maintenance, database)  # new sessions take the setting
            answers = [(await timed_post(client, signer, f"ro-{n}"))[0] for n in range(6)]
            ready = await client.get("/readyz")
        finally:
            await maintenance.execute(
                f'ALTER DATABASE "{database}" RESET default_transaction_read_only'
            )
            await terminate_backends(maintenance, database)
        recovered = (await timed_post(client, signer, "ro-0"))[0]
        ready_again = await client.get("/readyz")
    await maintenance.close()

    print(f"\nread-only: webhooks {Counter(a.status_code for a in answers)}, readyz {ready.text}")
    for answer in answers:
        assert_retry_later(answer)
    assert_retry_later(ready, "database_read_only")
    # After the terminated sessions, at most the first request meets a dead connection.
    assert recovered.status_code in (200, 503)
    assert ready_again.status_code in (200, 503)
    assert tracebacks(server) == 0


async def seed_log(url: str, events: int) -> None:
    """A log of `events` deliveries of a dozen types, a few rejected, straight in SQL."""
    connection = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        await connection.execute(
            """
            INSERT INTO webhook_events (received_at, webhook_type, session_id, outcome,
                                        fingerprint, payload)
            SELECT now() - n * interval '1 second',
                   'type-' || (n % 12),
                   's-' || (n % 5000),
                   CASE WHEN n % 997 = 0 THEN 'rejected' ELSE 'ignored' END,
                   md5(n::text), '{}'::json
            FROM generate_series(1, $1) AS n
            """,
            events,
        )
        await connection.execute("ANALYZE webhook_events")
    finally:
        await connection.close()


async def test_a_flood_of_expensive_reads_cannot_starve_intake(
    shared_database_url: str, signer: Signer, servers: list[ServerProcess], tmp_path: Path
) -> None:
    await seed_log(shared_database_url, 300_000)
    server = ServerProcess(
        env=server_env(
            shared_database_url, signer, DB_CONNECT_TIMEOUT_SECONDS="5", LOG_LEVEL="INFO"
        ),
        workers=1,
        log_path=tmp_path / "server.log",
    )
    servers.append(server)
    await asyncio.to_thread(server.start)
    # The costliest documented reads: several types, a rare outcome, old pages.
    expensive = [("webhookType", f"type-{n}") for n in range(6)] + [
        ("outcome", "rejected"),
        ("limit", "500"),
    ]
    stop = asyncio.Event()
    busy: Counter[str] = Counter()  # the most connections of each pool seen running at once

    async def watch_pools() -> None:
        observer = await asyncpg.connect(asyncpg_dsn(shared_database_url), timeout=10)
        try:
            while not stop.is_set():
                rows = await observer.fetch(
                    "SELECT application_name, query FROM pg_stat_activity "
                    "WHERE datname = current_database() AND state = 'active' "
                    "AND application_name LIKE 'trackhook%'"
                )
                running = Counter(row["application_name"] for row in rows)
                for name, count in running.items():
                    busy[name] = max(busy[name], count)
                # A read on an intake connection would be the starvation this test is about.
                for row in rows:
                    if row["application_name"] == "trackhook":
                        assert "FROM webhook_events" not in row["query"].split("INSERT")[0]
                await asyncio.sleep(0.02)
        finally:
            await observer.close()

    # The readers are other clients, in a process of their own (tests/support/read_flood.py
    # says why not a thread).
    flooding = subprocess.Popen(
        [sys.executable, "-m", "tests.support.read_flood", server.base_url,
         "/v1/webhook-events", "60", json.dumps(expensive)],
        cwd=PROJECT_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    watching = asyncio.create_task(watch_pools())
    try:
        # Each webhook on a connection of its own: the keep-alive race of a reused
        # connection is not what this test is about.
        async with httpx.AsyncClient(
            base_url=server.base_url,
            timeout=60,
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as sender:
            await asyncio.sleep(1.0)  # the flood is on
            timings: list[float] = []
            statuses: Counter[int] = Counter()
            for n in range(40):
                try:
                    response, took = await timed_post(sender, signer, f"flooded-{n}")
                except httpx.TransportError as exc:
                    pytest.fail(f"webhook {n} of 40: {exc!r}\n{server_report(server)}")
                statuses[response.status_code] += 1
                timings.append(took)
    finally:
        stop.set()
        output, _ = await asyncio.to_thread(flooding.communicate, b"stop\n", 120)
        await watching
    read_statuses: Counter[str] = Counter(json.loads(output))

    timings.sort()
    print(
        f"\nduring a flood of 60 expensive readers ({sum(read_statuses.values())} reads, "
        f"{dict(read_statuses)}; read connections busy at most {busy['trackhook-reads']}): "
        f"40 webhooks {dict(statuses)}, p50 {timings[20]:.3f}s, max {timings[-1]:.3f}s"
    )
    assert statuses == Counter({200: 40})
    # The reads never had more than their own pool (DB_READ_POOL_SIZE, 5) at once, however
    # many came: intake's connections stayed intake's.
    assert 0 < busy["trackhook-reads"] <= 5
    # No webhook waited out a connection (that wait ends at DB_CONNECT_TIMEOUT_SECONDS, 5 s,
    # in a 503: all are 200 above). How fast they were is printed, not asserted: the reads'
    # rendering shares the server's CPU (under coverage beside three busy processes on 2
    # cores: p50 0.15 s, max 0.55 s); the bench measures speed.
    assert set(read_statuses) - {"ReadError", "RemoteProtocolError"} <= {"200", "503"}
    assert read_statuses["200"] > 0
