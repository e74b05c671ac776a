"""Feed pages asked for in the same turn are read once; a page asked for after a read was
sent gets a read of its own (it must see what committed before it asked)."""

from __future__ import annotations

import asyncio

from app.ledger.feed import ChangeFilter, FeedPage, Position
from app.ledger.shared_pages import SharedPages

HEAD = Position(10, 0)


class Reads:
    """A read that answers when released, and counts what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[ChangeFilter, Position, int]] = []
        self.release = asyncio.Event()
        self.failure: Exception | None = None

    async def __call__(self, filters: ChangeFilter, after: Position, limit: int) -> FeedPage:
        self.sent.append((filters, after, limit))
        number = len(self.sent)
        await self.release.wait()
        if self.failure is not None:
            raise self.failure
        return FeedPage([], Position(after.txn + number, 0))


async def test_the_same_page_asked_in_one_turn_is_read_once() -> None:
    reads = Reads()
    pages = SharedPages(reads)
    asked = [asyncio.create_task(pages.page(ChangeFilter(), HEAD, 500)) for _ in range(5)]
    other = asyncio.create_task(pages.page(ChangeFilter(session_id="s"), HEAD, 500))
    await asyncio.sleep(0.01)
    reads.release.set()
    answers = await asyncio.gather(*asked)
    assert len(reads.sent) == 2  # one per distinct page
    assert all(answer is answers[0] for answer in answers)
    assert await other is not answers[0]


async def test_a_page_asked_after_the_read_was_sent_is_read_again() -> None:
    reads = Reads()
    pages = SharedPages(reads)
    first = asyncio.create_task(pages.page(ChangeFilter(), HEAD, 100))
    await asyncio.sleep(0.01)  # the first read is on its way
    assert len(reads.sent) == 1
    second = asyncio.create_task(pages.page(ChangeFilter(), HEAD, 100))
    await asyncio.sleep(0.01)
    reads.release.set()
    assert (await first).next == Position(11, 0)
    assert (await second).next == Position(12, 0)  # its own read, sent after it asked
    assert len(reads.sent) == 2


async def test_a_requester_that_goes_away_leaves_the_read_to_the_others() -> None:
    reads = Reads()
    pages = SharedPages(reads)
    leaving = asyncio.create_task(pages.page(ChangeFilter(), HEAD, 100))
    staying = asyncio.create_task(pages.page(ChangeFilter(), HEAD, 100))
    await asyncio.sleep(0.01)
    leaving.cancel()
    reads.release.set()
    assert (await staying).next == Position(11, 0)
    assert leaving.cancelled()


async def test_a_failed_read_fails_every_requester() -> None:
    reads = Reads()
    reads.failure = RuntimeError("database gone")
    pages = SharedPages(reads)
    asked = [asyncio.create_task(pages.page(ChangeFilter(), HEAD, 100)) for _ in range(3)]
    await asyncio.sleep(0.01)
    reads.release.set()
    results = await asyncio.gather(*asked, return_exceptions=True)
    assert [str(r) for r in results] == ["database gone"] * 3
    assert len(reads.sent) == 1
