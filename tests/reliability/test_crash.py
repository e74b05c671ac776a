"""Crash: SIGKILL the server mid-stream, restart it, re-send what was not acknowledged;
every webhook answered 2xx is in the log and the state is the fold of the log."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.reliability.conftest import (
    Delivery,
    check_log_and_state,
    logged_fingerprints,
    missing_acknowledged,
    post_delivery,
    server_env,
)
from tests.support.payloads import LIFECYCLE, file_entry, track_webhook
from tests.support.server import ServerProcess
from tests.support.signing import Signer

SEED = 20240611
KEYS = 214
KILLS = 3
ACKNOWLEDGED_PER_KILL = 300
CONCURRENCY = 16
MAX_FINAL_ROUNDS = 5


def stream_of_webhooks(signer: Signer, rng: random.Random) -> list[Delivery]:
    """~1,000 deliveries: a full lifecycle per key (some restart or fail), interleaved
    across keys, with some exact repeats as VideoSDK's retries would make."""
    histories: list[list[Delivery]] = []
    for n in range(KEYS):
        session_id, participant_id = f"crash-{n // 4}", f"p{n % 4}"
        kind = ("audio", "video", "screen_audio", "screen_video")[n % 4]
        runs = 2 if rng.random() < 0.15 else 1
        history = []
        for run in range(runs):
            ending = "failed" if rng.random() < 0.1 else "stopped"
            for status in (*LIFECYCLE[:3], ending):
                files = [file_entry(f"{session_id}-{participant_id}-{kind}-{run}")]
                payload = track_webhook(
                    status,
                    session_id=session_id,
                    participant_id=participant_id,
                    kind=kind,
                    files=files if status == "stopped" else None,
                )
                label = f"{session_id}/{participant_id}/{kind}/{run}/{status}"
                history.append(Delivery.signed(signer, payload, label))
        histories.append(history)
    # Interleave: repeatedly take the next event of a random key that has one left.
    stream: list[Delivery] = []
    cursors = [0] * len(histories)
    live = list(range(len(histories)))
    while live:
        index = rng.choice(live)
        stream.append(histories[index][cursors[index]])
        cursors[index] += 1
        if cursors[index] == len(histories[index]):
            live.remove(index)
    for _ in range(len(stream) // 20):
        position = rng.randrange(len(stream))
        stream.insert(rng.randrange(position, len(stream) + 1), stream[position])
    return stream


@dataclass
class Ledger:
    """What the sender saw: acknowledged (event id, fingerprint) pairs and what is pending."""

    pending: deque[Delivery]
    acknowledged: list[tuple[int, str]] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    sent: int = 0


async def stream_until(
    server: ServerProcess, ledger: Ledger, kill_after: int | None
) -> tuple[int, int]:
    """Send pending deliveries; SIGKILL the server once `kill_after` more are acknowledged.
    Everything not answered 2xx goes back to the front of the queue, in order, to be re-sent.
    Returns (acknowledged in this phase, re-queued)."""
    failed: list[tuple[int, Delivery]] = []
    acknowledged_here = 0
    killed = asyncio.Event()
    order = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal acknowledged_here, order
        while ledger.pending and not killed.is_set():
            delivery = ledger.pending.popleft()
            order += 1
            position = order
            ledger.sent += 1
            try:
                response = await post_delivery(client, delivery)
            except httpx.HTTPError as exc:
                ledger.answers[type(exc).__name__] += 1
                failed.append((position, delivery))
                continue
            ledger.answers[str(response.status_code)] += 1
            if not response.is_success:
                failed.append((position, delivery))
                continue
            ledger.acknowledged.append((int(response.json()["eventId"]), delivery.fingerprint))
            acknowledged_here += 1
            if kill_after is not None and acknowledged_here >= kill_after and not killed.is_set():
                killed.set()
                # No shutdown code runs: requests in flight die with the workers.
                await asyncio.to_thread(server.kill)

    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=server.base_url, timeout=httpx.Timeout(30.0), limits=limits
    ) as client:
        await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))
    for _position, delivery in sorted(failed, key=lambda item: item[0], reverse=True):
        ledger.pending.appendleft(delivery)
    return acknowledged_here, len(failed)


async def test_sigkill_mid_stream_loses_no_acknowledged_webhook(
    shared_database_url: str, signer: Signer, servers: list[ServerProcess], tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    stream = stream_of_webhooks(signer, rng)
    ledger = Ledger(pending=deque(stream))
    server = ServerProcess(
        env=server_env(shared_database_url, signer), workers=2, log_path=tmp_path / "server.log"
    )
    servers.append(server)
    phases = []
    for _kill in range(KILLS):
        await asyncio.to_thread(server.start)
        acknowledged, requeued = await stream_until(server, ledger, ACKNOWLEDGED_PER_KILL)
        assert server.process is not None and server.process.returncode == -9, "not killed"
        phases.append((acknowledged, requeued))
        # What the workers had committed must all be there before anything is re-sent.
        logged = await logged_fingerprints(shared_database_url)
        assert missing_acknowledged(ledger.acknowledged, logged) == []
    acknowledged_before_kills = len(ledger.acknowledged)

    await asyncio.to_thread(server.start)
    for _round in range(MAX_FINAL_ROUNDS):
        if not ledger.pending:
            break
        await stream_until(server, ledger, kill_after=None)
    assert not ledger.pending, f"{len(ledger.pending)} webhooks never acknowledged"
    await asyncio.to_thread(server.stop)

    logged = await logged_fingerprints(shared_database_url)
    assert missing_acknowledged(ledger.acknowledged, logged) == []
    # Per fingerprint the log holds at least as many rows as 2xx answers were given.
    acknowledged_count = Counter(fp for _event_id, fp in ledger.acknowledged)
    logged_count = Counter(logged.values())
    assert all(logged_count[fp] >= n for fp, n in acknowledged_count.items())
    summary = await check_log_and_state(shared_database_url)
    distinct = len({delivery.fingerprint for delivery in stream})
    print(
        f"\ncrash: {len(stream)} webhooks in the stream ({distinct} distinct), "
        f"{ledger.sent} requests sent, {KILLS} SIGKILLs, acknowledged per phase before each "
        f"kill {[a for a, _r in phases]} (total {acknowledged_before_kills}), "
        f"re-sent after kills {[r for _a, r in phases]}; answers {dict(ledger.answers)}; "
        f"log {summary.events} events {summary.outcomes}, {summary.keys} keys, "
        f"{summary.recordings} recordings"
    )
