"""Feed pages read once for every request that asks for the same page in the same turn of
the event loop.

One wake-up wakes every waiter it concerns at once, and those that follow the feed alike
(several unfiltered streams at the head of the feed, say) then ask for the very same page:
the same filters, position and size. Asked in the same turn, the page is read once and
handed to each (a stream's page cost a database read per stream before). A read is shared
only by requests that asked before it was sent, so each gets a page read after it asked:
as fresh as a read of its own, which is what the feed's guarantee and the wake-ups rely on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from app.ledger.feed import ChangeFilter, FeedPage, Position

PageKey = tuple[ChangeFilter, Position, int]


class SharedPages:
    def __init__(self, read: Callable[[ChangeFilter, Position, int], Awaitable[FeedPage]]) -> None:
        self._read = read
        self._asked: dict[PageKey, asyncio.Task[FeedPage]] = {}

    async def page(self, filters: ChangeFilter, after: Position, limit: int) -> FeedPage:
        key = (filters, after, limit)
        reading = self._asked.get(key)
        if reading is None:
            # The task's first step runs in the loop's next turn, after everyone woken
            # together with this request has asked.
            reading = asyncio.create_task(self._read_once(key))
            reading.add_done_callback(_retrieved)
            self._asked[key] = reading
        # A request that goes away (cancelled) leaves the read to the others.
        return await asyncio.shield(reading)

    async def _read_once(self, key: PageKey) -> FeedPage:
        del self._asked[key]  # asked from here on: a read of its own, sent after it asked
        return await self._read(*key)


def _retrieved(task: asyncio.Task[FeedPage]) -> None:
    """Every requester may have gone: the read's failure is theirs, not the loop's to log."""
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
