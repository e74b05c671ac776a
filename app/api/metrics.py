"""`GET /metrics`: every metric in Prometheus' text format, behind its own bearer token
(METRICS_TOKEN; unset, the route answers 404).

Most metrics are counted where things happen (app.core.metrics says where). This module
adds, at each scrape, what is read rather than counted: this process's connections and
feed waiters (free to read), and the gauges read from the database (the open and stuck
recordings, the feed's lag), read at most every METRICS_CACHE_SECONDS per process and
waited for at most DATABASE_WAIT_SECONDS: a scrape never waits longer, never fails because
the database does, and then shows the last values read (the failure is counted).
With worker processes, each worker also writes its own connections and waiters every
SAMPLE_SECONDS, since a scrape reaches one worker and reads the others' files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request, Response

from app.api.auth import require_bearer
from app.api.deps import settings_of
from app.core import metrics
from app.core.errors import NotFound
from app.ledger.ledger import Ledger
from app.ledger.seam import Committed
from app.rules.lifecycle import Status

logger = logging.getLogger(__name__)

DATABASE_WAIT_SECONDS = 2.0
SAMPLE_SECONDS = 1.0

router = APIRouter(tags=["metrics"])


class LedgerGauges:
    """The gauges this process reads from its ledger, and the seam's count of transitions."""

    def __init__(self, ledger: Ledger, cache_seconds: float, stuck_after_seconds: int) -> None:
        self._ledger = ledger
        self._cache_seconds = cache_seconds
        self._stuck_after = timedelta(seconds=stuck_after_seconds)
        self._next_read = 0.0  # monotonic
        self._reading: asyncio.Task[None] | None = None
        self._sampling: asyncio.Task[None] | None = None
        self._transitions = {status: metrics.TRANSITIONS.labels(status.value) for status in Status}

    def start(self) -> None:
        self._ledger.seam.subscribe(self._count_transitions)
        self.sample_process()
        if metrics.is_multiprocess():
            self._sampling = asyncio.create_task(self._sample_forever())

    async def stop(self) -> None:
        for task in (self._sampling, self._reading):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def refresh(self) -> None:
        """Before a scrape: this process's gauges now, the database's as cached."""
        self.sample_process()
        if self._reading is None and time.monotonic() >= self._next_read:
            self._reading = asyncio.create_task(self._read_database())
        if self._reading is not None:
            # The read goes on past the wait (shielded); the next scrape shows its result.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DATABASE_WAIT_SECONDS):
                    await asyncio.shield(self._reading)

    def sample_process(self) -> None:
        for pool in self._ledger.pools():
            metrics.POOL_SIZE.labels(pool.name).set(pool.size)
            metrics.POOL_IN_USE.labels(pool.name).set(pool.in_use)
            if pool.name != "listen":
                metrics.POOL_WAITING.labels(pool.name).set(pool.waiting)
        metrics.FEED_WAITERS.set(self._ledger.watch.waiters)

    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            self.sample_process()

    async def _read_database(self) -> None:
        try:
            stats = await self._ledger.recording_stats(datetime.now(UTC) - self._stuck_after)
        except Exception as exc:  # the last values stay; the read is tried again later
            metrics.DATABASE_READ_FAILURES.inc()
            logger.info("metrics: cannot read the recordings' gauges (%s)", exc)
        else:
            for status, count in stats.open.items():
                metrics.RECORDINGS_OPEN.labels(status).set(count)
            metrics.RECORDINGS_STUCK.set(stats.stuck)
            if stats.feed_lag_seconds is not None:
                metrics.FEED_LAG.set(stats.feed_lag_seconds)
            metrics.DATABASE_READ_AT.set(time.time())
        finally:
            self._next_read = time.monotonic() + self._cache_seconds
            self._reading = None

    def _count_transitions(self, batch: Sequence[Committed]) -> None:
        # A status moves only forward and the first terminal one stays, so each recording is
        # counted at most once per status: stopped + failed is the recordings finished.
        for committed in batch:
            after = committed.after
            if after is not None and (
                committed.before is None or committed.before.status != after.status
            ):
                self._transitions[after.status].inc()


def gauges_of(request: Request) -> LedgerGauges:
    gauges = request.app.state.metrics
    assert isinstance(gauges, LedgerGauges), "the lifespan has not run"
    return gauges


@router.get("/metrics", include_in_schema=False)
async def scrape(request: Request) -> Response:
    token = settings_of(request).metrics_token
    if token is None:
        raise NotFound("/metrics is not served: set METRICS_TOKEN")
    require_bearer(request, [token.get_secret_value()], name="METRICS_TOKEN")
    await gauges_of(request).refresh()
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE_LATEST)
