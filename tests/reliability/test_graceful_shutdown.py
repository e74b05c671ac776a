"""Graceful shutdown: from SIGTERM on, new requests get a JSON 503 at once (or find the
listener closed), `/readyz` says 503, the requests in flight finish (answered and
committed), those still running at the deadline get a JSON 503, and the process is gone by
the graceful timeout. With `--workers` too: a new connection is answered or refused, never
left hanging."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
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
from tests.serving.rawhttp import RawAnswer, read_answer, request_bytes
from tests.support.deliveries import WEBHOOK_PATH
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
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
# Probes: fresh connections right after SIGTERM, each must be answered or refused at once.
PROBES = 15
# Of which this many also go out on a connection opened just before SIGTERM.
CONNECTED_BEFORE = 6
PROBE_EVERY_SECONDS = 0.02
PROBE_TIMEOUT_SECONDS = 2.0
AT_ONCE_SECONDS = 0.5
# Held past the deadline: a short graceful timeout, a statement timeout longer than it.
SHORT_GRACEFUL_TIMEOUT_SECONDS = 3
EXIT_SLACK_SECONDS = 0.5
RELAY_SECONDS = 0.1  # from the supervisor's SIGTERM to the workers' (with workers=2)


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


@asynccontextmanager
async def row_locked(database_url: str, recording_id: int) -> AsyncIterator[None]:
    """Hold the recording's row lock (a migration, a manual fix) until the block ends."""
    lock = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        locked = lock.transaction()
        await locked.start()
        await lock.execute("SELECT id FROM recordings WHERE id = $1 FOR UPDATE", recording_id)
        yield
        await locked.rollback()
    finally:
        await lock.close()


@dataclass(frozen=True)
class Probe:
    what: str
    outcome: str  # "503 shutting_down", "refused", or what else came back
    seconds: float


def classify(answer: RawAnswer) -> str:
    body = answer.json() if answer.header("content-type") == "application/json" else None
    if (
        answer.status == 503
        and isinstance(body, dict)
        and body.get("error") == "shutting_down"
        and (answer.header("retry-after") or "").isdigit()
        and answer.header("connection") == "close"
    ):
        return "503 shutting_down"
    return f"{answer.status} {answer.body[:60]!r}"


async def probe(port: int, what: str, request: bytes, connected: Connection | None = None) -> Probe:
    """One request, on a new connection or on one opened (and left unused) before SIGTERM."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            reader, writer = connected or await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(request)
                await writer.drain()
                outcome = classify(await read_answer(reader))
            finally:
                writer.close()
    except ConnectionRefusedError:
        outcome = "refused"
    except asyncio.IncompleteReadError:
        outcome = "closed without an answer"
    except TimeoutError:
        outcome = f"no answer within {PROBE_TIMEOUT_SECONDS} s"
    except OSError as exc:
        outcome = f"{type(exc).__name__}"
    return Probe(what if connected is None else f"{what} (connected before)", outcome,
                 time.monotonic() - started)  # fmt: skip


async def probe_after_sigterm(
    port: int, delivery: Delivery, connected: list[Connection]
) -> list[Probe]:
    """`/readyz` and a new webhook every 20 ms from the moment of SIGTERM, on new connections
    and on connections a client opened just before it."""
    readyz = request_bytes("GET", "/readyz")
    webhook = request_bytes(
        "POST",
        WEBHOOK_PATH,
        delivery.body,
        {"Content-Type": "application/json", "videosdk-signature": delivery.signature},
    )
    tasks = []
    for number in range(PROBES):
        tasks.append(asyncio.create_task(probe(port, "GET /readyz", readyz)))
        tasks.append(asyncio.create_task(probe(port, "POST webhook", webhook)))
        if number < len(connected):
            request = readyz if number % 2 else webhook
            what = "GET /readyz" if number % 2 else "POST webhook"
            tasks.append(asyncio.create_task(probe(port, what, request, connected[number])))
        await asyncio.sleep(PROBE_EVERY_SECONDS)
    return list(await asyncio.gather(*tasks))


async def open_connections(port: int, count: int) -> list[Connection]:
    return [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]


def assert_turned_away(probes: list[Probe]) -> None:
    wrong = [p for p in probes if p.outcome not in ("503 shutting_down", "refused")]
    assert not wrong, f"after SIGTERM: {wrong[:4]}"
    slow = [p for p in probes if p.seconds > AT_ONCE_SECONDS]
    assert not slow, f"not answered at once after SIGTERM: {slow[:4]}"
    # While requests are in flight the server still listens: a load balancer's probe is
    # told, rather than refused.
    first = next(p for p in probes if p.what == "GET /readyz")
    assert first.outcome == "503 shutting_down", first


def summary(probes: list[Probe]) -> str:
    counts = Counter(p.outcome for p in probes)
    return f"{dict(counts)}, slowest {max(p.seconds for p in probes) * 1000:.0f} ms"


async def start_server(
    database_url: str,
    signer: Signer,
    servers: list[ServerProcess],
    log_path: Path,
    graceful_timeout: int,
    workers: int = 1,
    **env: str,
) -> ServerProcess:
    server = ServerProcess(
        env=server_env(database_url, signer, **env),
        workers=workers,
        log_path=log_path,
        graceful_timeout=graceful_timeout,
    )
    servers.append(server)
    await asyncio.to_thread(server.start)
    return server


def distinct_deliveries(signer: Signer, count: int, session_id: str) -> list[Delivery]:
    # Distinct files make each one a distinct event (not an exact repeat).
    return [
        Delivery.signed(
            signer,
            track_webhook("started", session_id=session_id, files=[file_entry(f"part-{n}")]),
            f"started/{n}",
        )
        for n in range(count)
    ]


async def test_sigterm_turns_new_requests_away_and_lets_in_flight_ones_finish(
    shared_database_url: str, signer: Signer, servers: list[ServerProcess], tmp_path: Path
) -> None:
    server = await start_server(
        shared_database_url, signer, servers, tmp_path / "server.log", GRACEFUL_TIMEOUT_SECONDS
    )
    first = Delivery.signed(signer, track_webhook("starting", session_id=SESSION_ID))
    in_flight = distinct_deliveries(signer, IN_FLIGHT, SESSION_ID)
    newcomer = Delivery.signed(signer, track_webhook("starting", session_id="after-sigterm"))

    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        answer = await post_delivery(client, first)
        assert answer.status_code == 200, answer.text
        recording_id = int(answer.json()["recordingId"])

        async with row_locked(shared_database_url, recording_id):
            requests = [
                asyncio.create_task(post_delivery(client, delivery)) for delivery in in_flight
            ]
            # With group commit the deliveries for one key wait behind one statement that
            # waits on our lock, so one blocked backend means all of them are in flight.
            await wait_for_blocked_requests(shared_database_url, 1)
            await asyncio.sleep(0.3)
            assert not any(request.done() for request in requests), "answered under the lock"

            connected = await open_connections(server.port, CONNECTED_BEFORE)
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            probes = await probe_after_sigterm(server.port, newcomer, connected)
            await asyncio.sleep(
                max(0.0, HOLD_AFTER_SIGTERM_SECONDS - (time.monotonic() - signalled))
            )
            still_running = server.process.poll() is None
            answered_while_locked = sum(request.done() for request in requests)
        # The row is released: the blocked deliveries go on.
        responses = await asyncio.gather(*requests)

    try:
        exit_code = await asyncio.to_thread(server.process.wait, GRACEFUL_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        exit_code = None
    exited_after = time.monotonic() - signalled
    print(
        f"\ngraceful shutdown: {IN_FLIGHT} requests in flight at SIGTERM; new requests after "
        f"SIGTERM ({len(probes)} probes of /readyz and a webhook): "
        f"{summary(probes)}; in flight answered {[r.status_code for r in responses]}; "
        f"exit code {exit_code} {exited_after:.2f}s after SIGTERM"
    )
    assert_turned_away(probes)
    assert still_running, "the server exited while requests were in flight"
    assert answered_while_locked == 0, "requests were answered while the row was locked"
    assert [r.status_code for r in responses] == [200] * IN_FLIGHT, [r.text for r in responses]
    assert {r.json()["status"] for r in responses} == {"applied"}
    acknowledged = [
        (int(r.json()["eventId"]), d.fingerprint) for r, d in zip(responses, in_flight, strict=True)
    ]
    logged = await logged_fingerprints(shared_database_url)
    assert missing_acknowledged(acknowledged, logged) == []
    assert newcomer.fingerprint not in logged.values(), "a webhook after SIGTERM was stored"
    assert exit_code in CLEAN_EXITS, f"exit code {exit_code} after SIGTERM"


async def test_requests_held_past_the_deadline_get_a_json_503_and_the_process_exits_by_it(
    shared_database_url: str, signer: Signer, servers: list[ServerProcess], tmp_path: Path
) -> None:
    log_path = tmp_path / "server.log"
    server = await start_server(
        shared_database_url,
        signer,
        servers,
        log_path,
        SHORT_GRACEFUL_TIMEOUT_SECONDS,
        # The lead's statement timeout would end the lock wait first (default 5 s).
        DB_STATEMENT_TIMEOUT_SECONDS="30",
    )
    in_flight = distinct_deliveries(signer, IN_FLIGHT, "past-the-deadline")
    first = Delivery.signed(signer, track_webhook("starting", session_id="past-the-deadline"))
    answered_at: list[float] = []

    async def timed(client: httpx.AsyncClient, delivery: Delivery) -> httpx.Response:
        try:
            return await post_delivery(client, delivery)
        finally:
            answered_at.append(time.monotonic())

    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        answer = await post_delivery(client, first)
        assert answer.status_code == 200, answer.text
        recording_id = int(answer.json()["recordingId"])
        async with row_locked(shared_database_url, recording_id):
            requests = [asyncio.create_task(timed(client, d)) for d in in_flight]
            await wait_for_blocked_requests(shared_database_url, 1)
            await asyncio.sleep(0.3)
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            # The lock is held all along: nothing can finish before the deadline.
            outcomes = await asyncio.gather(*requests, return_exceptions=True)
            try:
                exit_code: int | None = await asyncio.to_thread(
                    server.process.wait, SHORT_GRACEFUL_TIMEOUT_SECONDS * 3
                )
            except subprocess.TimeoutExpired:
                exit_code = None
            exited_after = time.monotonic() - signalled

    answers = [o for o in outcomes if isinstance(o, httpx.Response)]
    described = [
        f"{o.status_code} {o.headers.get('content-type')} {o.text[:60]!r}"
        if isinstance(o, httpx.Response)
        else f"{type(o).__name__}"
        for o in outcomes
    ]
    after = sorted(t - signalled for t in answered_at)
    print(
        f"\npast the deadline: graceful timeout {SHORT_GRACEFUL_TIMEOUT_SECONDS} s, "
        f"{IN_FLIGHT} requests held by a row lock: {Counter(described)}, answered "
        f"{after[0]:.2f}-{after[-1]:.2f} s after SIGTERM; exit code {exit_code} "
        f"{exited_after:.2f} s after SIGTERM"
    )
    assert len(answers) == IN_FLIGHT, described
    for response in answers:
        assert response.status_code == 503, described
        assert response.headers["content-type"] == "application/json", described
        assert response.json()["error"] == "shutting_down", described
        assert response.headers["retry-after"].isdigit()
    assert after[-1] <= SHORT_GRACEFUL_TIMEOUT_SECONDS, after
    assert exit_code is not None, "the process outlived the lock"
    assert exited_after <= SHORT_GRACEFUL_TIMEOUT_SECONDS + EXIT_SLACK_SECONDS, exited_after


async def test_with_workers_a_new_connection_after_sigterm_is_answered_or_refused(
    shared_database_url: str, signer: Signer, servers: list[ServerProcess], tmp_path: Path
) -> None:
    server = await start_server(
        shared_database_url,
        signer,
        servers,
        tmp_path / "server.log",
        GRACEFUL_TIMEOUT_SECONDS,
        workers=2,
    )
    first = Delivery.signed(signer, track_webhook("starting", session_id="workers-shutdown"))
    [held] = distinct_deliveries(signer, 1, "workers-shutdown")
    newcomer = Delivery.signed(signer, track_webhook("starting", session_id="workers-after"))
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        answer = await post_delivery(client, first)
        assert answer.status_code == 200, answer.text
        async with row_locked(shared_database_url, int(answer.json()["recordingId"])):
            request = asyncio.create_task(post_delivery(client, held))
            await wait_for_blocked_requests(shared_database_url, 1)
            connected = await open_connections(server.port, CONNECTED_BEFORE)
            assert server.process is not None
            # The supervisor alone, as `docker stop` and Kubernetes signal PID 1.
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            # The supervisor passes the signal on in its handler, but a request a worker
            # reads before its own SIGTERM is served as usual (answered, and stored: correct,
            # not a hang); CI once saw a probe sent at once answered 200 in 21 ms. Probing
            # starts once the signal has had time to reach the workers.
            await asyncio.sleep(RELAY_SECONDS)
            probes = await probe_after_sigterm(server.port, newcomer, connected)
            # A while later, the in-flight request still holds its worker: still nothing hangs.
            await asyncio.sleep(0.5)
            late = await probe_after_sigterm(server.port, newcomer, [])
            still_running = server.process.poll() is None
        response = await request
    try:
        exit_code = await asyncio.to_thread(server.process.wait, GRACEFUL_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        exit_code = None
    print(
        f"\nworkers=2 shutdown: probes after SIGTERM {summary(probes)}; 0.5 s later "
        f"{summary(late)}; in flight answered {response.status_code}; exit code "
        f"{exit_code} {time.monotonic() - signalled:.2f} s after SIGTERM"
    )
    assert_turned_away(probes + late)
    assert still_running
    assert response.status_code == 200, response.text
    assert exit_code in CLEAN_EXITS, exit_code


def worker_pids(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [
        int(pid)
        for pid in children
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()  # not a tracker
    ]


async def test_sigterm_while_the_supervisor_replaces_a_hung_worker_exits_cleanly(
    shared_database_url: str, signer: Signer, servers: list[ServerProcess], tmp_path: Path
) -> None:
    # The supervisor pings each worker (up to 5 s) and replaces one that does not answer.
    # A SIGTERM during that wait used to be followed by the replacement's start on the
    # sockets the signal had closed: "ValueError: bad value(s) in fds_to_keep", exit 1.
    log_path = tmp_path / "server.log"
    server = await start_server(
        shared_database_url, signer, servers, log_path, GRACEFUL_TIMEOUT_SECONDS, workers=2
    )
    assert server.process is not None
    [hung, _] = worker_pids(server.process.pid)
    os.kill(hung, signal.SIGSTOP)  # its ping goes unanswered, as a worker stuck on the GIL
    try:
        await asyncio.sleep(1.0)  # the supervisor is now waiting on the hung worker's ping
        server.process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(server.process.wait, GRACEFUL_TIMEOUT_SECONDS)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung, signal.SIGKILL)
    log = log_path.read_text(errors="replace")
    assert "fds_to_keep" not in log and "Traceback" not in log, log[-3000:]
    assert exit_code in CLEAN_EXITS, (exit_code, log[-3000:])
