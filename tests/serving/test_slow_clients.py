"""Slow clients: connections that never finish their request are closed after
REQUEST_READ_TIMEOUT_SECONDS, hold no database connection meanwhile, and do not slow down
the webhooks of a normal client."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import orjson

from tests.serving.rawhttp import parse_answer
from tests.support.databases import asyncpg_dsn
from tests.support.deliveries import Delivery, post_delivery, server_env
from tests.support.payloads import track_webhook
from tests.support.server import ServerProcess
from tests.support.signing import Signer

READ_TIMEOUT_SECONDS = 2.0
# Each kind: connections that send nothing, that trickle their headers and never finish
# them, that send whole headers and then trickle a body they never finish.
PER_KIND = 100
KINDS = ("silent", "headers", "body")
TRICKLE_EVERY_SECONDS = 0.4
# How long after its bound a slow connection may still be open (scheduling on 2 cores).
CLOSE_SLACK_SECONDS = 1.0
NORMAL_LATENCY_LIMIT_SECONDS = 1.0


@dataclass
class SlowResult:
    kind: str
    closed_after: float | None  # seconds from connect to the server closing it; None: still open
    received: bytes


async def slow_connection(port: int, kind: str, give_up_after: float) -> SlowResult:
    opened = time.monotonic()  # the server's clock starts at its accept, after this
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()
    if kind == "headers":
        writer.write(b"POST /webhooks/videosdk HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
    elif kind == "body":
        writer.write(
            b"POST /webhooks/videosdk HTTP/1.1\r\nHost: slow\r\n"
            b"Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n{"
        )

    async def trickle() -> None:
        while kind != "silent":
            await asyncio.sleep(TRICKLE_EVERY_SECONDS)
            writer.write(b"a" if kind == "headers" else b" ")
            await writer.drain()

    trickling = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(give_up_after):
            while chunk := await reader.read(65536):
                received += chunk
        return SlowResult(kind, time.monotonic() - opened, bytes(received))
    except TimeoutError:
        return SlowResult(kind, None, bytes(received))
    except (ConnectionResetError, BrokenPipeError):
        return SlowResult(kind, time.monotonic() - opened, bytes(received))
    finally:
        trickling.cancel()
        writer.close()


async def busy_backends(database_url: str) -> tuple[int, int]:
    """(the service's connections, those of them not idle) in pg_stat_activity."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        row = await connection.fetchrow(
            "SELECT count(*) AS total, count(*) FILTER (WHERE state <> 'idle') AS busy "
            "FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'trackhook'"
        )
    finally:
        await connection.close()
    return row["total"], row["busy"]


async def test_slow_clients_are_cut_off_and_cost_the_others_nothing(
    shared_database_url: str, signer: Signer, servers: list[ServerProcess], tmp_path: Path
) -> None:
    server = ServerProcess(
        env=server_env(
            shared_database_url, signer, REQUEST_READ_TIMEOUT_SECONDS=str(READ_TIMEOUT_SECONDS)
        ),
        log_path=tmp_path / "server.log",
    )
    servers.append(server)
    await asyncio.to_thread(server.start)
    give_up_after = READ_TIMEOUT_SECONDS * 2 + CLOSE_SLACK_SECONDS

    attack_started = time.monotonic()
    slow = [
        asyncio.create_task(slow_connection(server.port, kind, give_up_after))
        for kind in KINDS
        for _ in range(PER_KIND)
    ]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    quiet = asyncio.Event()
    quiet.set()

    async def normal_client() -> None:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            number = 0
            while not all(task.done() for task in slow):
                await quiet.wait()
                number += 1
                delivery = Delivery.signed(
                    signer, track_webhook("starting", session_id=f"normal-{number}")
                )
                sent = time.monotonic()
                answer = await post_delivery(client, delivery)
                latencies.append(time.monotonic() - sent)
                statuses[answer.status_code] += 1
                await asyncio.sleep(0.02)

    normal = asyncio.create_task(normal_client())
    # Once every slow connection is open and sending, and no normal request is in flight:
    # what the service holds in PostgreSQL.
    await asyncio.sleep(READ_TIMEOUT_SECONDS / 2)
    quiet.clear()
    await asyncio.sleep(0.2)
    total, busy = await busy_backends(shared_database_url)
    quiet.set()

    results = await asyncio.gather(*slow)
    await normal
    attack_seconds = time.monotonic() - attack_started

    by_kind: dict[str, list[SlowResult]] = {kind: [] for kind in KINDS}
    for result in results:
        by_kind[result.kind].append(result)
    still_open = [r for r in results if r.closed_after is None]
    closed_after = [r.closed_after for r in results if r.closed_after is not None]
    answers = Counter(
        parse_answer(r.received).status if r.received else None for r in results if r.received
    )
    print(
        f"\nslow clients: {len(results)} slow connections ({PER_KIND} each {', '.join(KINDS)}), "
        f"REQUEST_READ_TIMEOUT_SECONDS={READ_TIMEOUT_SECONDS}: {len(results) - len(still_open)} "
        f"closed by the server"
        + (f" after {min(closed_after):.2f}-{max(closed_after):.2f} s" if closed_after else "")
        + f", {len(still_open)} still open after {give_up_after:.1f} s; answers {dict(answers)}; "
        f"service's PostgreSQL connections during the attack: {total} open, {busy} busy; "
        f"normal webhooks: {dict(statuses)} in {attack_seconds:.1f} s, latency median "
        f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    assert not still_open, (
        f"{len(still_open)} of {len(results)} slow connections still open "
        f"{give_up_after:.1f} s after they connected: "
        f"{Counter(r.kind for r in still_open)}"
    )
    assert max(closed_after) <= READ_TIMEOUT_SECONDS + CLOSE_SLACK_SECONDS
    assert min(closed_after) >= READ_TIMEOUT_SECONDS - 0.05  # the loop's clock resolution
    for result in by_kind["silent"]:
        assert result.received == b"", result
    for result in by_kind["headers"] + by_kind["body"]:
        answer = parse_answer(result.received)
        assert answer.status == 408, result
        body = orjson.loads(answer.body)
        assert body["error"] == "request_timeout", body
        assert answer.header("connection") == "close"
    assert busy == 0, f"{busy} of the service's database connections busy with slow clients"
    assert set(statuses) == {200}, statuses
    assert max(latencies) < NORMAL_LATENCY_LIMIT_SECONDS, max(latencies)
