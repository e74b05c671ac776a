"""The ledger: the one owner of `recordings` and `webhook_events`.

It records verified deliveries (the group writer on PostgreSQL, the locked writer on
SQLite), opens readers for the query API, reports the schema's version for readiness,
and announces what committed on its seam (`ledger.seam`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.core.config import Settings
from app.ledger import feed, stats
from app.ledger.engine import PoolUsage, Role, create_engine, pool_usage
from app.ledger.faults import DatabaseReadOnly, storage_faults
from app.ledger.feed import ChangeFilter, FeedPage, Position
from app.ledger.group_writer import GroupWriter
from app.ledger.locked_writer import LockedWriter
from app.ledger.migrations import current_revision
from app.ledger.plan import Delivery
from app.ledger.reader import Reader, reader_factory
from app.ledger.seam import AfterCommit, Committed
from app.ledger.shared_pages import SharedPages
from app.ledger.stats import RecordingStats
from app.ledger.watch import ChangeWatch


class Ledger:
    def __init__(self, settings: Settings) -> None:
        self.engine = create_engine(settings, Role.WRITES)
        self.read_engine = create_engine(settings, Role.READS)
        self.dialect: str = self.engine.dialect.name
        self.seam = AfterCommit()
        locked = LockedWriter(self.engine, self.seam, settings.max_files_per_recording)
        self._group = (
            GroupWriter(self.engine, self.seam, locked, settings.max_files_per_recording)
            if self.dialect == "postgresql"
            else None
        )
        self._writer: LockedWriter | GroupWriter = self._group or locked
        self.reader: Callable[[], AbstractAsyncContextManager[Reader]] = reader_factory(
            self.read_engine
        )
        self._pages = SharedPages(self._read_page)
        self.watch = ChangeWatch(
            self.reader,
            self.dialect,
            self.seam,
            listen_dsn=_driver_dsn(settings.database_url) if self.dialect == "postgresql" else None,
            connect_timeout=settings.db_connect_timeout_seconds,
        )

    def start(self) -> None:
        if self._group is not None:
            self._group.start()
        self.watch.start()

    async def close(self) -> None:
        """After the server has drained its requests."""
        await self.watch.stop()
        if self._group is not None:
            await self._group.stop()
        await self.engine.dispose()
        await self.read_engine.dispose()

    async def record(self, delivery: Delivery) -> Committed:
        """Log the delivery (and apply it to its track); returns once it is committed."""
        return await self._writer.record(delivery)

    async def readiness(self) -> str | None:
        """The schema's revision, read on an intake connection in a transaction that checks
        the database can take writes now: not read-only, not a standby, and the two tables
        not locked against writers (NOWAIT: a probe never waits). Raises the 503 to answer."""
        async with storage_faults(), self.engine.connect() as connection, connection.begin():
            if self.dialect == "postgresql":
                recovery, read_only = (
                    await connection.execute(
                        text("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')")
                    )
                ).one()
                if recovery or read_only == "on":
                    raise DatabaseReadOnly("the database cannot take writes (read-only)")
                await connection.execute(
                    text("LOCK TABLE recordings, webhook_events IN ROW EXCLUSIVE MODE NOWAIT")
                )
            revision = await connection.run_sync(current_revision)
            await connection.rollback()
        return revision

    def pools(self) -> list[PoolUsage]:
        """The connections of this process: the intake's pool, the reads' pool and (on
        PostgreSQL) the change watch's listening connection."""
        usage = [
            pool_usage("writes", self.engine.pool),
            pool_usage("reads", self.read_engine.pool),
        ]
        if self.dialect == "postgresql":
            listening = int(self.watch.listening)
            usage.append(PoolUsage("listen", size=1, in_use=listening, waiting=0))
        return usage

    async def recording_stats(self, stuck_before: datetime) -> RecordingStats:
        """The open recordings by status, the stuck ones and the feed's lag (on a read
        connection, within DB_READ_TIMEOUT_SECONDS per statement)."""
        async with self.reader() as reader:
            return await stats.recording_stats(reader, self.dialect, stuck_before)

    async def feed_end(self) -> Position:
        async with self.reader() as reader:
            return await feed.now(reader, self.dialect)

    async def changes(
        self, filters: ChangeFilter, after: Position, limit: int, wait: float
    ) -> FeedPage:
        """The next page of the change feed; when it is empty, wait up to `wait` seconds for a
        matching change to commit (holding no connection meanwhile), then answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        async with self.watch.waiting(filters, after) as waiter:
            while True:
                waiter.clear()
                page = await self._page(filters, waiter.position, limit)
                remaining = deadline - loop.time()
                if page.changes or remaining <= 0 or self.watch.closing:
                    return page
                waiter.advance(page.next)
                await waiter.wait(remaining)

    async def follow(
        self, filters: ChangeFilter, after: Position, limit: int, idle: float
    ) -> AsyncIterator[FeedPage]:
        """The feed's pages from `after` on, as they come: one registration for the whole
        stream, one read per wake-up (or at once after a full page), until shutdown. Wakes
        at least every `idle` seconds to read again."""
        async with self.watch.waiting(filters, after) as waiter:
            while not self.watch.closing:
                waiter.clear()
                page = await self._page(filters, waiter.position, limit)
                waiter.advance(page.next)
                if page.changes:
                    yield page
                if len(page.changes) < limit and not self.watch.closing:
                    await waiter.wait(idle)

    async def _page(self, filters: ChangeFilter, after: Position, limit: int) -> FeedPage:
        return await self._pages.page(filters, after, limit)

    async def _read_page(self, filters: ChangeFilter, after: Position, limit: int) -> FeedPage:
        async with self.reader() as reader:
            return await feed.read(reader, self.dialect, after, filters, limit)


def _driver_dsn(database_url: str) -> str:
    """The URL as asyncpg itself takes it (for the listening connection)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
