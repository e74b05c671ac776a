"""`trackhook serve --workers 2`: whichever worker a scrape reaches, it sees the sum of both
(prometheus-client's multiprocess mode, one fresh directory per server); a worker that dies
keeps its counts in the sum, and its gauges leave it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from app.server import metrics_dir
from tests.metrics.conftest import METRICS_TOKEN, Scrape, sync_scrape
from tests.support.deliveries import server_env
from tests.support.payloads import track_webhook
from tests.support.server import PROJECT_ROOT, ServerProcess
from tests.support.signing import Signer

APPLIED = {"type": "participant-track-recording-starting", "outcome": "applied", "status": "200"}
WEBHOOKS = "trackhook_webhooks_received_total"
POOL_SIZE = "trackhook_db_pool_size"
DB_POOL_SIZE = 4
T = TypeVar("T")


def _workers(server: ServerProcess) -> dict[int, Path]:
    """The server's worker processes, each with its metrics directory."""
    assert server.process is not None
    parent = server.process.pid
    found = {}
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        if b"spawn_main" not in command:  # multiprocessing's resource tracker, say
            continue
        for entry in environ:
            if entry.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
                found[int(child)] = Path(entry.split(b"=", 1)[1].decode())
    return found


def _replaced(server: ServerProcess, gone: int | None = None) -> dict[int, Path] | None:
    """Both workers, once they are up (and `gone` is not one of them)."""
    workers = _workers(server)
    return workers if len(workers) == 2 and gone not in workers else None


def _one_worker(directory: Path, pid: int) -> Scrape:
    """What one worker alone has counted: its own files, summed by the library itself."""
    with tempfile.TemporaryDirectory() as alone:
        for path in directory.glob(f"*_{pid}.db"):
            os.symlink(path, Path(alone) / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=alone)  # type: ignore[no-untyped-call]
        return Scrape.parse(generate_latest(registry).decode())


async def _deliver(base_url: str, signer: Signer, sessions: list[str]) -> None:
    """Concurrently, each on a connection of its own (so the kernel spreads them over the
    workers' accepts)."""

    async def one(session: str) -> None:
        body = orjson.dumps(track_webhook("starting", session_id=session))
        headers = {"content-type": "application/json", "videosdk-signature": signer.sign(body)}
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            answer = await http.post("/webhooks/videosdk", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "applied"

    await asyncio.gather(*(one(session) for session in sessions))


def _until(check: Callable[[], T | None], timeout: float = 20) -> T:
    deadline = time.monotonic() + timeout
    while (answer := check()) is None:
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.1)
    return answer


async def test_a_scrape_sums_both_workers(
    shared_database_url: str, signer: Signer, servers: list[ServerProcess]
) -> None:
    env = server_env(
        shared_database_url,
        signer,
        METRICS_TOKEN=METRICS_TOKEN,
        DB_POOL_SIZE=str(DB_POOL_SIZE),
        PROMETHEUS_MULTIPROC_DIR="/nonexistent/not-used",  # the server makes its own
    )
    server = ServerProcess(env, workers=2)
    servers.append(server)
    server.start()
    workers = _until(lambda: _replaced(server))
    (directory,) = set(workers.values())
    assert directory.is_dir() and directory.name.startswith("trackhook-metrics-")

    # Until both workers have taken some (the kernel decides who accepts each connection).
    sent: list[str] = []
    while len(sent) < 400:
        batch = [f"workers-{len(sent) + n}" for n in range(40)]
        await _deliver(server.base_url, signer, batch)
        sent += batch
        per_worker = {
            pid: _one_worker(directory, pid).value(WEBHOOKS, **APPLIED) for pid in workers
        }
        if all(per_worker.values()):
            break
    scrapes = [sync_scrape(server.base_url) for _ in range(12)]

    assert all(per_worker.values()), per_worker  # both took some ...
    assert sum(per_worker.values()) == len(sent)
    for answer in scrapes:  # ... and every scrape, whoever answered it, has them all
        assert answer.value(WEBHOOKS, **APPLIED) == len(sent)
        assert answer.value("trackhook_intake_duration_seconds_count", status="200") == len(sent)
        # Live gauges: the two workers' pools, summed.
        assert answer.value(POOL_SIZE, pool="writes") == 2 * DB_POOL_SIZE
    # Multiprocess mode has no per-process metrics of the library's (they would not sum).
    assert not any(name.startswith("process_") for name, _ in scrapes[0].samples)

    # A worker killed: its replacement serves, its counts stay, its gauges go.
    killed = next(iter(workers))
    os.kill(killed, signal.SIGKILL)
    replacement = _until(lambda: _replaced(server, gone=killed))
    (new,) = set(replacement) - set(workers)
    # Once the replacement has written its pools (at its start) and the supervisor has
    # looked again, the pools are the two live workers' again, not three workers'.
    _until(lambda: next(directory.glob(f"gauge_livesum_{new}.db"), None))
    time.sleep(1.5)
    for answer in [sync_scrape(server.base_url) for _ in range(6)]:
        assert answer.value(POOL_SIZE, pool="writes") == 2 * DB_POOL_SIZE
        assert answer.value(WEBHOOKS, **APPLIED) == len(sent)  # the dead worker's stay
    await _deliver(server.base_url, signer, ["after-the-kill"])
    assert sync_scrape(server.base_url).value(WEBHOOKS, **APPLIED) == len(sent) + 1

    # The server's directory goes with it.
    assert server.terminate() == 0
    assert not directory.exists()


def test_the_command_line_leaves_prometheus_client_unimported() -> None:
    """The library picks its mode (one process, or workers' files) when first imported, so
    `trackhook serve` must set the directory before anything imports it."""
    probe = "import sys, app.cli; print('prometheus_client' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False", out.stderr


def test_a_killed_servers_directory_is_removed_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv(metrics_dir.ENV, raising=False)
    dead = subprocess.Popen(["true"])  # a pid that has exited
    dead.wait()
    left_behind = tmp_path / f"{metrics_dir.PREFIX}{dead.pid}-abc"
    running = tmp_path / f"{metrics_dir.PREFIX}{os.getpid()}-def"
    other = tmp_path / "unrelated-dir"
    for path in (left_behind, running, other):
        path.mkdir()

    assert metrics_dir.prepare_metrics_directory(1) is None
    assert metrics_dir.ENV not in os.environ and left_behind.exists()  # one process: no files
    made = metrics_dir.prepare_metrics_directory(2)

    assert made is not None and made.parent == tmp_path and made.is_dir()
    assert os.environ[metrics_dir.ENV] == str(made)
    assert not left_behind.exists()
    assert running.exists() and other.exists()
