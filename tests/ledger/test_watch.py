"""The change watch's decision whom to wake (no database: its read is given)."""

from __future__ import annotations

import asyncio

from app.ledger.feed import WATCH_LIMIT, ChangeFilter, Position, Watched
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
