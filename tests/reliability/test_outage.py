"""Database outage: while PostgreSQL is down the service says "retry later" (503 +
Retry-After), writes nothing half-way, and recovers by itself once it is back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import httpx

from app.ledger.migrations import upgrade_to_head
from tests.reliability.conftest import (
    Delivery,
    assert_unavailable,
    asyncpg_dsn,
    check_log_and_state,
    logged_fingerprints,
    missing_acknowledged,
    post_delivery,
    server_env,
    wait_ready,
)
from tests.reliability.private_postgres import PrivatePostgres
from tests.support.payloads import file_entry, track_webhook
from tests.support.server import ServerProcess
from tests.support.signing import Signer

CONNECT_TIMEOUT_SECONDS = "2"
# A request that takes longer than this is a hang, not a 503.
REQUEST_TIMEOUT = httpx.Timeout(20.0)
RECOVERY_TIMEOUT_SECONDS = 30.0


def lifecycle(signer: Signer, session_id: str, kind: str) -> list[Delivery]:
    deliveries = []
    for status in ("starting", "started", "stopping", "stopped"):
        files = [file_entry(f"{session_id}-{kind}")] if status == "stopped" else None
        payload = track_webhook(status, session_id=session_id, kind=kind, files=files)
        deliveries.append(Delivery.signed(signer, payload, f"{session_id}/{kind}/{status}"))
    return deliveries


async def start_service(
    postgres: PrivatePostgres,
    signer: Signer,
    servers: list[ServerProcess],
    log_path: Path,
    workers: int = 1,
) -> ServerProcess:
    await asyncio.to_thread(upgrade_to_head, postgres.url)
    env = server_env(postgres.url, signer, DB_CONNECT_TIMEOUT_SECONDS=CONNECT_TIMEOUT_SECONDS)
    server = ServerProcess(env=env, workers=workers, log_path=log_path)
    servers.append(server)
    await asyncio.to_thread(server.start)
    return server


async def deliver_retrying(
    client: httpx.AsyncClient, delivery: Delivery, attempts: int = 30
) -> tuple[httpx.Response, int]:
    """Re-send on 503 as VideoSDK would (without waiting Retry-After out); insists on a 200.
    Returns the answer and how many 503s came first."""
    for refused in range(attempts):
        response = await post_delivery(client, delivery)
        if response.status_code != 503:
            assert response.status_code == 200, response.text
            return response, refused
        assert_unavailable(response)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{delivery.label}: still 503 after {attempts} attempts")


async def wait_postgres(url: str, timeout: float = RECOVERY_TIMEOUT_SECONDS) -> None:
    """Until PostgreSQL itself accepts connections (without asking the service)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection = await asyncpg.connect(asyncpg_dsn(url), timeout=2)
        except (OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
        else:
            await connection.close()
            return


async def test_outage_answers_503_then_recovers_without_restart(
    private_postgres: PrivatePostgres,
    signer: Signer,
    servers: list[ServerProcess],
    tmp_path: Path,
) -> None:
    server = await start_service(private_postgres, signer, servers, tmp_path / "server.log")
    keys = [(f"outage-{n}", kind) for n in range(3) for kind in ("audio", "video")]
    histories = [lifecycle(signer, session_id, kind) for session_id, kind in keys]
    before = [delivery for history in histories for delivery in history[:2]]
    during = [delivery for history in histories for delivery in history[2:]]
    applied_answers = 0

    async with httpx.AsyncClient(base_url=server.base_url, timeout=REQUEST_TIMEOUT) as client:
        for delivery in before:
            response = await post_delivery(client, delivery)
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "applied"
            applied_answers += 1

        await asyncio.to_thread(private_postgres.stop, "immediate")
        slowest = 0.0
        for delivery in during:
            started = time.monotonic()
            response = await post_delivery(client, delivery)
            slowest = max(slowest, time.monotonic() - started)
            assert_unavailable(response)
        assert_unavailable(await client.get("/readyz"))
        assert_unavailable(await client.get("/v1/recordings"))
        # The process stays up through the outage: liveness is not readiness.
        assert (await client.get("/healthz")).status_code == 200

        await asyncio.to_thread(private_postgres.start)
        recovery_started = time.monotonic()
        polls = await wait_ready(client, RECOVERY_TIMEOUT_SECONDS)
        recovery = time.monotonic() - recovery_started

        for delivery in during:
            response = await post_delivery(client, delivery)
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "applied", delivery.label
            applied_answers += 1

        listed = (await client.get("/v1/recordings", params={"limit": 100})).json()["items"]
        assert sorted((r["sessionId"], r["kind"], r["status"]) for r in listed) == sorted(
            (session_id, kind, "stopped") for session_id, kind in keys
        )

    summary = await check_log_and_state(private_postgres.url)
    assert summary.applied == applied_answers
    assert summary.events == applied_answers  # the 503s logged nothing
    print(
        f"\noutage: {len(before)} webhooks before, {len(during)} answered 503 during the outage "
        f"(slowest {slowest:.2f}s), ready again after {recovery:.2f}s ({polls} polls), "
        f"{len(during)} re-sent and applied; log {summary.events} events, "
        f"{summary.recordings} recordings"
    )


async def test_outage_mid_burst_keeps_every_acknowledged_webhook(
    private_postgres: PrivatePostgres,
    signer: Signer,
    servers: list[ServerProcess],
    tmp_path: Path,
) -> None:
    server = await start_service(
        private_postgres, signer, servers, tmp_path / "server.log", workers=2
    )
    histories = [lifecycle(signer, f"burst-{n}", "audio") for n in range(40)]
    # Interleave the keys: each key's events stay in lifecycle order.
    deliveries = [history[step] for step in range(4) for history in histories]
    stop_after = len(deliveries) // 4
    acknowledged: list[tuple[int, str]] = []
    not_acknowledged: list[Delivery] = []
    statuses: dict[str, int] = {}
    unexpected: list[str] = []
    answered = asyncio.Event()
    limit = asyncio.Semaphore(16)

    async def send(client: httpx.AsyncClient, delivery: Delivery) -> None:
        async with limit:
            try:
                response = await post_delivery(client, delivery)
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
                not_acknowledged.append(delivery)
                return
        statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
        if response.status_code == 200:
            acknowledged.append((int(response.json()["eventId"]), delivery.fingerprint))
            if len(acknowledged) >= stop_after:
                answered.set()
            return
        not_acknowledged.append(delivery)
        if response.status_code == 503:
            assert_unavailable(response)
        else:
            unexpected.append(f"{delivery.label}: {response.status_code} {response.text}")

    async def kill_database() -> None:
        await answered.wait()
        await asyncio.to_thread(private_postgres.stop, "immediate")

    async with httpx.AsyncClient(base_url=server.base_url, timeout=REQUEST_TIMEOUT) as client:
        killer = asyncio.create_task(kill_database())
        await asyncio.gather(*(send(client, delivery) for delivery in deliveries))
        await killer
        acknowledged_before = len(acknowledged)
        assert not unexpected, unexpected
        assert not_acknowledged, "PostgreSQL went down after the burst; nothing was tested"

        await asyncio.to_thread(private_postgres.start)
        await wait_ready(client, RECOVERY_TIMEOUT_SECONDS)
        logged = await logged_fingerprints(private_postgres.url)
        assert missing_acknowledged(acknowledged, logged) == []

        # As VideoSDK would: re-send what got no 2xx (in the original order). /readyz
        # answered from one worker; the other may still hold dead pooled connections.
        resend = sorted(not_acknowledged, key=deliveries.index)
        late_503s = 0
        for delivery in resend:
            response, refused = await deliver_retrying(client, delivery)
            late_503s += refused
            acknowledged.append((int(response.json()["eventId"]), delivery.fingerprint))

    logged = await logged_fingerprints(private_postgres.url)
    assert missing_acknowledged(acknowledged, logged) == []
    assert {delivery.fingerprint for delivery in deliveries} <= set(logged.values())
    summary = await check_log_and_state(private_postgres.url)
    print(
        f"\noutage mid-burst: {len(deliveries)} webhooks, {acknowledged_before} acknowledged "
        f"before/around the stop, answers {statuses}, {len(resend)} re-sent "
        f"({late_503s} more 503s after /readyz was 200); "
        f"log {summary.events} events {summary.outcomes}, {summary.recordings} recordings"
    )


async def test_restart_while_idle_costs_at_most_one_503(
    private_postgres: PrivatePostgres,
    signer: Signer,
    servers: list[ServerProcess],
    tmp_path: Path,
) -> None:
    """PostgreSQL restarts between deliveries (no request sees it down, no /readyz probe
    runs): the first delivery may find a dead pooled connection and get a 503, but that
    must tell the service to drop them all, not cost one 503 per pooled connection."""
    server = await start_service(private_postgres, signer, servers, tmp_path / "server.log")
    histories = [lifecycle(signer, f"idle-{n}", "video") for n in range(12)]
    async with httpx.AsyncClient(base_url=server.base_url, timeout=REQUEST_TIMEOUT) as client:
        # Concurrent deliveries leave several connections in the pool.
        first = await asyncio.gather(*(post_delivery(client, h[0]) for h in histories))
        assert [r.status_code for r in first] == [200] * len(histories)

        await asyncio.to_thread(private_postgres.stop, "fast")
        await asyncio.to_thread(private_postgres.start)
        await wait_postgres(private_postgres.url)

        answers = [(await post_delivery(client, h[1])).status_code for h in histories]
        refused = answers.count(503)
        retried = [
            (await deliver_retrying(client, h[1]))[0].status_code
            for h, status in zip(histories, answers, strict=True)
            if status == 503
        ]
    print(
        f"\nrestart while idle: {len(histories)} pooled deliveries, answers after the "
        f"restart {answers} ({refused} x 503), re-sent {len(retried)} -> {retried}"
    )
    assert set(answers) <= {200, 503}, answers
    await check_log_and_state(private_postgres.url)
    assert refused <= 1, f"{refused} deliveries answered 503 after PostgreSQL was back"
