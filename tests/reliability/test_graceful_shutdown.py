"""Graceful shutdown: on SIGTERM the server stops accepting connections, lets the requests
in flight finish (answered and committed), then exits."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import asyncpg
import httpx

from tests.reliability.conftest import (
    Delivery,
    asyncpg_dsn,
    logged_fingerprints,
    missing_acknowledged,
    post_delivery,
    server_env,
)
from tests.support.payloads import file_entry, track_webhook
from tests.support.server import ServerProcess
from tests.support.signing import Signer

# uvicorn (>= 0.29) finishes its graceful shutdown, then re-raises the signal it caught,
# so the parent sees "terminated by SIGTERM" (as shells and systemd expect), not 0.
CLEAN_EXITS = (0, -signal.SIGTERM)
IN_FLIGHT = 6
GRACEFUL_TIMEOUT_SECONDS = 15
HOLD_AFTER_SIGTERM_SECONDS = 1.0
SESSION_ID = "graceful-session"


async def wait_for_blocked_requests(database_url: str, expected: int) -> None:
    """Until `expected` of the service's transactions wait on our row lock (bounded)."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        for _ in range(200):
            waiting = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'trackhook' AND wait_event_type = 'Lock'"
            )
            if waiting >= expected:
                return
            await asyncio.sleep(0.1)
    finally:
        await connection.close()
    raise AssertionError(f"only {waiting} of {expected} deliveries blocked on the row lock")


async def connection_refused(base_url: str) -> bool:
    """True once the server no longer accepts connections (polled, bounded)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as client:
        for _ in range(100):
            try:
                await client.get("/healthz")
            except httpx.ConnectError:
                return True
            await asyncio.sleep(0.05)
    return False


async def test_sigterm_lets_in_flight_requests_finish_and_commit(
    shared_database_url: str, signer: Signer, servers: list[ServerProcess], tmp_path: Path
) -> None:
    server = ServerProcess(
        env=server_env(shared_database_url, signer),
        workers=1,
        log_path=tmp_path / "server.log",
        graceful_timeout=GRACEFUL_TIMEOUT_SECONDS,
    )
    servers.append(server)
    await asyncio.to_thread(server.start)
    first = Delivery.signed(signer, track_webhook("starting", session_id=SESSION_ID))
    # Distinct files make each one a distinct event (not an exact repeat).
    in_flight = [
        Delivery.signed(
            signer,
            track_webhook("started", session_id=SESSION_ID, files=[file_entry(f"part-{n}")]),
            f"started/{n}",
        )
        for n in range(IN_FLIGHT)
    ]

    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        answer = await post_delivery(client, first)
        assert answer.status_code == 200, answer.text
        recording_id = int(answer.json()["recordingId"])

        lock = await asyncpg.connect(asyncpg_dsn(shared_database_url), timeout=10)
        try:
            locked = lock.transaction()
            await locked.start()
            await lock.execute("SELECT id FROM recordings WHERE id = $1 FOR UPDATE", recording_id)
            requests = [
                asyncio.create_task(post_delivery(client, delivery)) for delivery in in_flight
            ]
            # With group commit the deliveries for one key wait behind one statement that
            # waits on our lock, so one blocked backend means all of them are in flight.
            await wait_for_blocked_requests(shared_database_url, 1)
            await asyncio.sleep(0.3)
            assert not any(request.done() for request in requests), "answered under the lock"

            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            refused = await connection_refused(server.base_url)
            await asyncio.sleep(HOLD_AFTER_SIGTERM_SECONDS)
            still_running = server.process.poll() is None
            answered_while_locked = sum(request.done() for request in requests)
            await locked.rollback()  # releases the row: the blocked deliveries go on
        finally:
            await lock.close()
        responses = await asyncio.gather(*requests)

    try:
        exit_code = await asyncio.to_thread(server.process.wait, GRACEFUL_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        exit_code = None
    exited_after = time.monotonic() - signalled
    assert refused, "the server still accepted connections after SIGTERM"
    assert still_running, "the server exited while requests were in flight"
    assert answered_while_locked == 0, "requests were answered while the row was locked"
    assert [r.status_code for r in responses] == [200] * IN_FLIGHT, [r.text for r in responses]
    assert {r.json()["status"] for r in responses} == {"applied"}
    acknowledged = [
        (int(r.json()["eventId"]), d.fingerprint) for r, d in zip(responses, in_flight, strict=True)
    ]
    assert missing_acknowledged(acknowledged, await logged_fingerprints(shared_database_url)) == []
    assert exit_code in CLEAN_EXITS, f"exit code {exit_code} after SIGTERM"
    print(
        f"\ngraceful shutdown: {IN_FLIGHT} requests in flight at SIGTERM, new connections "
        f"refused: {refused}, all answered {[r.status_code for r in responses]}, "
        f"all committed, exit code {exit_code} {exited_after:.2f}s after SIGTERM"
    )
