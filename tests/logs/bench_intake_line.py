"""What the intake's log line costs (issue 11, item 2): deliveries through the app in
process (httpx's ASGITransport), with the line (LOG_FORMAT=json or text, LOG_LEVEL=INFO)
and without it (LOG_LEVEL=WARNING: the lane skips it); then the line alone, formatted and
written, without the delivery; and a delivery's metrics alone (issue 11, item 1), in
memory or, with PROMETHEUS_MULTIPROC_DIR set to an empty directory, in the workers' files.

By default the ledger's `record` is a stub that commits nothing (the request, the lane,
parsing and validation are real): a database's commit varies by more than the line costs.
`--database-url` writes to a real (migrated) database instead.

    .venv/bin/python -m tests.logs.bench_intake_line [--deliveries 2000] [--rounds 5] \
        [--database-url URL] 2>/dev/null

The log lines go to stderr (send them to /dev/null, as above, or to a file); the figures
go to stdout. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter, process_time

import httpx
import orjson

from app.core import metrics
from app.core.config import LogFormat, Settings
from app.core.logs import configure_logging
from app.intake.lane import answered, log_answered
from app.ledger.migrations import upgrade_to_head
from app.ledger.plan import Delivery
from app.ledger.seam import Committed
from app.main import create_app
from app.rules.lifecycle import Outcome
from app.videosdk.documents import EventIdentity
from tests.support.payloads import track_webhook

MODES = {
    "json, INFO (line)": (LogFormat.JSON, "INFO"),
    "text, INFO (line)": (LogFormat.TEXT, "INFO"),
    "WARNING (no line)": (LogFormat.JSON, "WARNING"),
}


async def deliveries(
    url: str, log_format: LogFormat, level: str, tag: str, count: int, stub: bool
) -> float:
    """CPU seconds per delivery (this process's: other work on the machine does not count),
    `count` distinct deliveries one after the other."""
    settings = Settings(
        database_url=url,
        webhook_signature="off",  # the RSA check is not what is measured
        api_auth="off",
        log_format=log_format,
        log_level=level,
    )
    app = create_app(settings)
    bodies = [
        orjson.dumps(track_webhook("starting", session_id=f"{tag}-{n}")) for n in range(count)
    ]
    headers = {"content-type": "application/json"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench.test"
        ) as http,
    ):
        # httpx logs each of the bench's own requests at INFO: not the service's line.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        if stub:
            events = iter(range(1, 1 << 62))

            async def record(delivery: Delivery) -> Committed:
                return Committed(delivery, Outcome.APPLIED, next(events), 1)

            app.state.ledger.record = record
        for body in bodies[:50]:  # warm up (the first of each kind are slower)
            await http.post("/webhooks/videosdk", content=body + b" ", headers=headers)
        started = process_time()
        for body in bodies:
            response = await http.post("/webhooks/videosdk", content=body, headers=headers)
            assert response.status_code == 200, response.text
        return (process_time() - started) / count


def applied_delivery() -> Committed:
    """An applied delivery as the seam hands it over, for the parts measured alone."""
    delivery = Delivery(
        received_at=datetime.now(UTC),
        webhook_type="participant-track-recording-started",
        identity=EventIdentity("jvsg-8rjn-j304", "613731342f27f56e4fc4b6d0", "abcd", "audio"),
        fingerprint="f",
        payload={},
    )
    return Committed(delivery, Outcome.APPLIED, 123456, 7890)


def line_alone(log_format: LogFormat, count: int) -> float:
    """CPU seconds per intake line, built, formatted and written (no delivery around it)."""
    configure_logging("INFO", log_format)
    committed = applied_delivery()
    started = process_time()
    for _ in range(count):
        log_answered(200, 0.001, "applied", committed)
    return (process_time() - started) / count


def metrics_alone(count: int) -> float:
    """CPU seconds per delivery's metrics (its count and its latency), at LOG_LEVEL=WARNING so
    no line is made: in memory, or in PROMETHEUS_MULTIPROC_DIR's files when it is set (as
    `trackhook serve --workers N` sets it) before this runs."""
    configure_logging("WARNING", LogFormat.TEXT)
    committed = applied_delivery()
    started = process_time()
    for _ in range(count):
        answered(200, perf_counter(), committed=committed)
    return (process_time() - started) / count


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database-url", help="a migrated database (default: the stub)")
    args = parser.parse_args()
    per_mode: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as directory:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}"
        if args.database_url is None:
            await asyncio.to_thread(upgrade_to_head, url)  # the stub still starts a ledger
        for round_ in range(args.rounds):
            for mode, (log_format, level) in MODES.items():
                tag = f"r{round_}-{level}-{log_format}-{perf_counter()}"
                per_mode[mode].append(
                    await deliveries(
                        url, log_format, level, tag, args.deliveries, args.database_url is None
                    )
                )
    where = "a stub ledger" if args.database_url is None else "the database"
    print(f"{args.deliveries} deliveries x {args.rounds} rounds on {where}, CPU per delivery:")
    # The best round of each mode, and the median: other work on the machine only adds.
    for name, pick in (("best", min), ("median", statistics.median)):
        baseline = pick(per_mode["WARNING (no line)"])
        for mode, seconds in per_mode.items():
            value = pick(seconds)
            print(
                f"  {name:6} {mode:20} {value * 1e6:8.1f} us  ({(value - baseline) * 1e6:+.1f}"
                f" us, {(value / baseline - 1) * 100:+.1f} %)"
            )
    for log_format in LogFormat:
        alone = min(line_alone(log_format, 20_000) for _ in range(5))
        print(f"  the line alone (best of 5 x 20,000), {log_format}: {alone * 1e6:.1f} us")
    alone = min(metrics_alone(20_000) for _ in range(5))
    where = "files" if metrics.is_multiprocess() else "memory"
    print(f"  the metrics alone (best of 5 x 20,000, in {where}): {alone * 1e6:.1f} us")
    logging.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
