"""The change watch's decision whom to wake, and where it reads from (no database: its
read is given)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from app.ledger.feed import WATCH_COLUMNS, WATCH_LIMIT, ChangeFilter, Position, Watched
from app.ledger.reader import Query
from app.ledger.seam import AfterCommit
from app.ledger.watch import ChangeWatch, Waiter


def change(txn: int, ident: int, session: str, status: str = "started") -> dict[str, object]:
    return {
        "id": ident,
        "change_txn": txn,
        "meeting_id": "m",
        "session_id": session,
        "participant_id": "p",
        "kind": "audio",
        "status": status,
    }


async def test_a_matching_change_wakes_and_a_quiet_waiter_moves_past_what_was_read() -> None:
    wanted = Waiter(ChangeFilter(session_id="a"), Position(10, 0))
    quiet = Waiter(ChangeFilter(session_id="z"), Position(10, 0))
    stopped = Waiter(ChangeFilter(statuses=frozenset({"stopped"})), Position(10, 0))
    watched = Watched(horizon=20, changes=[change(11, 1, "a"), change(12, 2, "b", "stopped")])

    ChangeWatch._wake([wanted, quiet, stopped], watched)

    assert wanted.woken and stopped.woken and not quiet.woken
    # Nothing for `quiet` below the horizon of the same read: its next read starts there,
    # and the watch's next read is no longer held back by it.
    assert quiet.position == Position(20, 0)
    assert wanted.position == Position(10, 0)  # a woken waiter reads for itself


async def test_a_change_at_or_before_a_waiters_position_does_not_wake_it() -> None:
    waiter = Waiter(ChangeFilter(session_id="a"), Position(12, 5))
    ChangeWatch._wake([waiter], Watched(horizon=13, changes=[change(12, 5, "a")]))
    assert not waiter.woken and waiter.position == Position(13, 0)


async def test_after_a_truncated_read_a_quiet_waiter_moves_only_to_its_last_row() -> None:
    rows = [change(100 + n, n + 1, "b") for n in range(WATCH_LIMIT)]
    waiter = Waiter(ChangeFilter(session_id="a"), Position(0, 0))
    ChangeWatch._wake([waiter], Watched(horizon=10_000, changes=rows))
    assert not waiter.woken
    assert waiter.position == Position(100 + WATCH_LIMIT - 1, WATCH_LIMIT)


async def test_positions_never_move_back() -> None:
    waiter = Waiter(ChangeFilter(), Position(50, 0))
    waiter.advance(Position(40, 0))
    assert waiter.position == Position(50, 0)
    await asyncio.sleep(0)


class GivenReads:
    """The watch's reader: records where each read starts, answers with `horizon` and
    no change."""

    def __init__(self, horizon: int) -> None:
        self.horizon = horizon
        self.started_at: list[Position] = []

    @contextlib.asynccontextmanager
    async def reader(self) -> AsyncIterator[GivenReads]:
        yield self

    async def rows(self, query: Query, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        self.started_at.append(Position(params["after_txn"], params["after_id"]))
        return [(self.horizon, *([None] * len(WATCH_COLUMNS)))]


async def test_a_woken_waiter_does_not_hold_the_watchs_read_back() -> None:
    reads = GivenReads(horizon=60)
    watch = ChangeWatch(reads.reader, "sqlite", AfterCommit())
    async with (
        watch.waiting(ChangeFilter(), Position(1, 0)) as woken,
        watch.waiting(ChangeFilter(), Position(50, 0)),
    ):
        woken.wake()  # it reads its own page next
        watch.changed(55)
        await watch._wake_matching()
    assert reads.started_at == [Position(50, 0)]


async def test_while_every_waiter_is_being_served_the_watch_reads_once_one_waits_again() -> None:
    reads = GivenReads(horizon=200)
    watch = ChangeWatch(reads.reader, "sqlite", AfterCommit())
    async with watch.waiting(ChangeFilter(), Position(30, 0)) as waiter:
        waiter.wake()
        watch.changed(100)  # announced, and nobody left to read it for
        watch._dirty.clear()  # as the watch's loop does before it reads

        async def served_then_waits() -> None:
            await asyncio.sleep(0.02)
            waiter.advance(Position(90, 0))  # its own page ended there
            waiter.clear()

        serving = asyncio.create_task(served_then_waits())
        await asyncio.wait_for(watch._wake_matching(), timeout=5)
        await serving
    # No read while it was woken; then one from its new position, which saw change 100.
    assert reads.started_at == [Position(90, 0)]


async def test_with_nothing_announced_and_every_waiter_served_the_watch_does_not_read() -> None:
    reads = GivenReads(horizon=10)
    watch = ChangeWatch(reads.reader, "sqlite", AfterCommit())
    async with watch.waiting(ChangeFilter(), Position(3, 0)) as waiter:
        waiter.wake()
        await asyncio.wait_for(watch._wake_matching(), timeout=1)
    assert reads.started_at == []
