"""What holds the change feed back during a run. The feed serves a change only once every
older transaction of the whole PostgreSQL cluster has ended (docs/ARCHITECTURE.md, "The
change feed"), so a transaction left open in another database (a test suite on the same
server, say) delays every consumer by as long. A thread samples the transactions that
hold a transaction id; the bench reports them next to the wake-up figures, and waits for
the horizon to pass the run's last change before it counts a change as never seen."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg

SAMPLE_SECONDS = 0.05
HELD_BACK_MS = 100.0  # an open transaction older than this holds the feed back noticeably

OPEN_WRITERS = """
SELECT pid, backend_xid::text AS xid, datname, datname = current_database() AS ours,
       extract(epoch FROM clock_timestamp() - xact_start) * 1000 AS age_ms
FROM pg_stat_activity
WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
"""
HORIZON = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
LAST_CHANGE = "SELECT coalesce(max(change_txn), 0) FROM recordings"


@dataclass
class HorizonWatch:
    """Samples, every SAMPLE_SECONDS from `start()` to `stop()`, the transactions holding a
    transaction id anywhere in the cluster, in this database and in others."""

    dsn: str
    samples: int = 0
    held_back: int = 0  # samples with another database's transaction older than HELD_BACK_MS
    seen: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)
    error: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> HorizonWatch:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> HorizonWatch:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self

    async def _run(self) -> None:
        try:
            connection = await asyncpg.connect(self.dsn)
        except (OSError, asyncpg.PostgresError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return
        try:
            while not self._stop.is_set():
                held = False
                for row in await connection.fetch(OPEN_WRITERS):
                    key = (int(row["pid"]), str(row["xid"]))
                    age = float(row["age_ms"] or 0.0)
                    entry = self.seen.setdefault(
                        key, {"database": row["datname"], "ours": bool(row["ours"])}
                    )
                    entry["age_ms"] = max(entry.get("age_ms", 0.0), age)
                    held = held or (not row["ours"] and age > HELD_BACK_MS)
                self.samples += 1
                self.held_back += held
                await asyncio.sleep(SAMPLE_SECONDS)
        finally:
            await connection.close()

    def summary(self) -> dict[str, Any]:
        def longest(ours: bool) -> list[dict[str, Any]]:
            found = [e for e in self.seen.values() if e["ours"] is ours]
            found.sort(key=lambda e: e["age_ms"], reverse=True)
            return [
                {"database": e["database"], "open_at_least_ms": round(e["age_ms"], 1)}
                for e in found[:3]
            ]

        others = [e for e in self.seen.values() if not e["ours"]]
        return {
            "sample_every_s": SAMPLE_SECONDS,
            "samples": self.samples,
            "other_databases_transactions": len(others),
            "other_databases_longest": longest(ours=False),
            "held_back_share": round(self.held_back / self.samples, 4) if self.samples else None,
            "this_database_longest": longest(ours=True),
            "error": self.error or None,
        }


async def wait_for_horizon(dsn: str, limit_s: float) -> float | None:
    """Seconds until the cluster's horizon has passed the database's last change (every
    change readable by the feed); None if it had not after `limit_s`."""
    connection = await asyncpg.connect(dsn)
    try:
        last = int(await connection.fetchval(LAST_CHANGE))
        started = time.monotonic()
        while time.monotonic() - started < limit_s:
            if int(await connection.fetchval(HORIZON)) > last:
                return round(time.monotonic() - started, 3)
            await asyncio.sleep(SAMPLE_SECONDS)
        return None
    finally:
        await connection.close()
