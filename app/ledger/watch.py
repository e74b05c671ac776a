"""Waking the requests that wait on the change feed, in every process, within milliseconds.

Each process holds one `ChangeWatch`. Requests waiting for a change register a `Waiter`
(their filters and position) and sleep on it; they hold no database connection while they
wait. Whenever something may have changed, the watch reads the changes after the oldest
waiting position (one compact query for all of its waiters) and wakes exactly the waiters
with a matching change past their position; each then reads its own page.

What tells a process that something changed:
- its own commits, from the ledger's seam (in-process, no round trip);
- on PostgreSQL, every other process's commits: each process LISTENs on one connection of
  its own, and after a commit its seam sends `NOTIFY trackhook_changes, '<txn>'` (after,
  not inside, the write transaction: a NOTIFY inside would serialise every commit on
  PostgreSQL's notification lock). A change numbered at or above the horizon is not yet
  readable (an older transaction is still in flight): the watch reads again, backing off
  from 2 ms, until the horizon has passed it;
- a read every POLL_SECONDS while anyone waits, and one right after the listening
  connection is re-established, so a notification lost in between costs latency, never a
  change (the feed's read is always the truth; a wake-up is only a hint).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg

from app.ledger import feed
from app.ledger.feed import ChangeFilter, Position
from app.ledger.reader import Reader
from app.ledger.seam import AfterCommit, Committed

logger = logging.getLogger(__name__)

CHANNEL = "trackhook_changes"
POLL_SECONDS = 1.0
RECONNECT_SECONDS = (0.1, 5.0)  # first and longest wait before reconnecting
HORIZON_BACKOFF_SECONDS = (0.002, 0.2)


class Waiter:
    def __init__(self, filters: ChangeFilter, position: Position) -> None:
        self.filters = filters
        self.position = position
        self._equal = tuple(filters.equalities.items())
        self._statuses = filters.statuses
        self._event = asyncio.Event()

    def matches(self, change: dict[str, Any]) -> bool:
        """`filters.matches`, with the filter taken apart once (it runs for every change)."""
        if any(change[name] != value for name, value in self._equal):
            return False
        return not self._statuses or change["status"] in self._statuses

    def advance(self, position: Position) -> None:
        """Nothing this waiter wants lies before `position` (positions only move forward)."""
        self.position = max(self.position, position)

    @property
    def woken(self) -> bool:
        return self._event.is_set()

    def wake(self) -> None:
        self._event.set()

    def clear(self) -> None:
        """Before reading: a wake-up from here on means "read again"."""
        self._event.clear()

    async def wait(self, timeout: float) -> bool:
        """Until woken (True) or `timeout` seconds have passed (False)."""
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        return True


class ChangeWatch:
    def __init__(
        self,
        reader: Callable[[], AbstractAsyncContextManager[Reader]],
        dialect: str,
        seam: AfterCommit,
        listen_dsn: str | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self._reader = reader
        self._dialect = dialect
        self._listen_dsn = listen_dsn
        self._connect_timeout = connect_timeout
        self._waiters: set[Waiter] = set()
        self._wanted = 0  # the highest transaction number announced so far
        # The horizon of the last read: every change below it was seen (before any read, 1:
        # above the 0 of "nothing announced").
        self._horizon = 1
        self._dirty = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._notify_txn: int | None = None
        self._notifying: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.closing = False
        seam.subscribe(self._committed)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._read_forever())]
        if self._listen_dsn is not None:
            self._tasks.append(asyncio.create_task(self._listen_forever()))

    async def stop(self) -> None:
        """Wake every waiter (they answer at once) and stop listening."""
        self.close()
        if self._notifying is not None:  # the last announcement goes out (bounded)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._notifying
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=1)

    def close(self) -> None:
        """From now on nobody waits: the server is shutting down."""
        self.closing = True
        for waiter in self._waiters:
            waiter.wake()

    @asynccontextmanager
    async def waiting(self, filters: ChangeFilter, position: Position) -> AsyncIterator[Waiter]:
        """Register before the first read, so that no change after it can go unnoticed."""
        waiter = Waiter(filters, position)
        self._waiters.add(waiter)
        try:
            yield waiter
        finally:
            self._waiters.discard(waiter)

    @property
    def waiters(self) -> int:
        return len(self._waiters)

    @property
    def listening(self) -> bool:
        """Whether the connection listening for other processes' changes is up."""
        return self._listener is not None and not self._listener.is_closed()

    # What may have changed

    def _committed(self, batch: Sequence[Committed]) -> None:
        txns = [c.txn for c in batch if c.txn is not None]
        if not txns:
            return
        self.changed(max(txns))
        if self._listen_dsn is not None:
            self._announce(max(txns))

    def changed(self, txn: int) -> None:
        """Transaction `txn` committed a change somewhere."""
        self._wanted = max(self._wanted, txn)
        self._dirty.set()

    def _announce(self, txn: int) -> None:
        """NOTIFY the other processes, one statement at a time: announcements that come
        while one is on its way are merged into the next (only the highest number counts)."""
        self._notify_txn = max(txn, self._notify_txn or 0)
        if self._notifying is None or self._notifying.done():
            self._notifying = asyncio.create_task(self._notify())

    async def _notify(self) -> None:
        while self._notify_txn is not None:
            txn, self._notify_txn = self._notify_txn, None
            listener = self._listener
            if listener is None or listener.is_closed():
                continue  # the others' polls will see it; the listener is reconnecting
            try:
                await listener.execute("SELECT pg_notify($1, $2)", CHANNEL, str(txn))
            except Exception as exc:  # whatever went wrong, the others' polls will see it
                logger.info("could not announce a change (%s); the others' polls will see it", exc)

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            self.changed(int(payload))
        except ValueError:
            self._dirty.set()

    async def _listen_forever(self) -> None:
        assert self._listen_dsn is not None
        delay = RECONNECT_SECONDS[0]
        while True:
            lost = asyncio.Event()
            try:
                connection = await asyncpg.connect(
                    self._listen_dsn,
                    timeout=self._connect_timeout,
                    server_settings={"application_name": "trackhook-listen"},
                )
                connection.add_termination_listener(_setter(lost))
                await connection.add_listener(CHANNEL, self._notified)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                logger.warning("cannot listen for changes (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_SECONDS[1])
                continue
            self._listener = connection
            delay = RECONNECT_SECONDS[0]
            self._dirty.set()  # anything announced while we were not listening
            try:
                await lost.wait()
            finally:
                self._listener = None
                with contextlib.suppress(Exception):
                    await connection.close(timeout=1)
            logger.warning("lost the connection listening for changes; reconnecting")

    # Whom to wake

    async def _read_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_SECONDS):
                    await self._dirty.wait()
            self._dirty.clear()
            if not self._waiters:
                continue
            try:
                await self._wake_matching()
            except Exception as exc:  # a failed read wakes everyone: they read for themselves
                logger.info("change watch could not read (%s); waking every waiter", exc)
                for waiter in list(self._waiters):
                    waiter.wake()
                await asyncio.sleep(POLL_SECONDS)

    async def _wake_matching(self) -> None:
        backoff = HORIZON_BACKOFF_SECONDS[0]
        while self._waiters:
            # A woken waiter reads its own page next: what lies before its position concerns
            # no one else, and must not hold the read back (under load many are woken and not
            # yet served). It is looked at again once it waits, in a read of the loop below
            # or of the next change.
            waiters = [waiter for waiter in self._waiters if not waiter.woken]
            if waiters:
                after = min(waiter.position for waiter in waiters)
                async with self._reader() as reader:
                    watched = await feed.watch(reader, self._dialect, after)
                self._wake(waiters, watched)
                self._horizon = watched.horizon
            if self._wanted < self._horizon or self._dirty.is_set():
                return  # every announced change is readable now (or a newer read is due)
            # An announced change is behind an older transaction still in flight (or every
            # waiter is being served): read again shortly.
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, HORIZON_BACKOFF_SECONDS[1])

    @staticmethod
    def _wake(waiters: list[Waiter], watched: feed.Watched) -> None:
        """Wake each waiter with a matching change past its position, and move the others
        past what this read saw: the next read starts there, instead of growing behind a
        waiter whose filter nothing matched for a while."""
        changes = watched.changes
        seen_up_to = (
            Position(watched.horizon, 0)
            if watched.complete
            else Position(changes[-1]["change_txn"], changes[-1]["id"])
        )
        # The changes come in feed order: each waiter looks only at those past its position.
        positions = [(change["change_txn"], change["id"]) for change in changes]
        for waiter in waiters:
            if waiter.woken:
                continue
            past = bisect.bisect_right(positions, (waiter.position.txn, waiter.position.id))
            if any(waiter.matches(change) for change in itertools.islice(changes, past, None)):
                waiter.wake()
            else:
                waiter.advance(seen_up_to)


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    return lambda _connection: event.set()
