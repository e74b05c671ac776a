"""A stream's events: the SSE wire format of each change, encoded once per page read.

Streams at the same position share one read of a page; they must then also share its
encoding (the cost that dominated a worker with ten streams open), and never hand one
page's events to another page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from app.api.changes import _EncodedPages
from app.api.cursors import decode_feed_cursor
from app.ledger.feed import Change, FeedPage, Position
from app.ledger.rows import RecordingRow

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def change(recording_id: int, txn: int, status: str = "started") -> Change:
    row = RecordingRow(
        id=recording_id,
        meeting_id="m-1",
        session_id="s-1",
        participant_id=f"p-{recording_id}",
        kind="audio",
        sequence=1,
        status=status,
        starting_at=NOW,
        started_at=NOW if status != "starting" else None,
        stopping_at=None,
        stopped_at=None,
        failed_at=None,
        created_at=NOW,
        updated_at=NOW,
        files=[],
        version=2,
    )
    return Change(row, Position(txn, recording_id))


def parsed(stream: bytes) -> list[dict[str, str]]:
    events = []
    for block in stream.decode().split("\r\n\r\n"):
        if block.strip():
            fields = dict(line.split(": ", 1) for line in block.strip().splitlines())
            events.append(fields)
    return events


def test_a_page_is_one_event_per_change_with_its_cursor_and_document() -> None:
    page = FeedPage([change(7, 100), change(8, 101, "starting")], Position(101, 8))
    events = parsed(_EncodedPages().events(page, NOW - timedelta(hours=1)))
    assert [e["event"] for e in events] == ["recording", "recording"]
    assert [decode_feed_cursor(e["id"], "id") for e in events] == [(100, 7), (101, 8)]
    documents = [orjson.loads(e["data"]) for e in events]
    assert [(d["id"], d["status"], d["version"]) for d in documents] == [
        ("7", "started", 2),
        ("8", "starting", 2),
    ]


def test_the_same_page_is_encoded_once_and_another_page_on_its_own() -> None:
    encoded = _EncodedPages(keep=2)
    first = FeedPage([change(7, 100)], Position(100, 7))
    same_content = FeedPage([change(7, 100)], Position(100, 7))
    other = FeedPage([change(9, 102)], Position(102, 9))
    stuck_before = NOW - timedelta(hours=1)
    once = encoded.events(first, stuck_before)
    assert encoded.events(first, stuck_before) is once  # shared, not encoded again
    assert encoded.events(same_content, stuck_before) is not once  # another read: its own
    assert parsed(encoded.events(other, stuck_before))[0]["data"] != parsed(once)[0]["data"]
    # Only the last `keep` pages are held: the first one is encoded anew, with equal bytes.
    again = encoded.events(first, stuck_before)
    assert again is not once and again == once
