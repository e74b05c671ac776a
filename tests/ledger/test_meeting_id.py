"""A track's later runs keep the meetingId its first event named, on every write path."""

from __future__ import annotations

from tests.support.client import WebhookClient
from tests.support.payloads import track_webhook


async def test_a_restart_inherits_the_meeting_id(client: WebhookClient) -> None:
    for status in ("starting", "started", "stopping", "stopped"):
        await client.deliver(track_webhook(status, session_id="s-m", meeting_id="meeting-1"))
    restart = track_webhook("starting", session_id="s-m", meeting_id="meeting-2")
    opened = await client.deliver(restart)
    runs = (await client.get("/v1/recordings", sessionId="s-m")).json()["items"]
    by_sequence = {run["sequence"]: run for run in runs}
    assert sorted(by_sequence) == [1, 2]
    assert by_sequence[2]["id"] == opened["recordingId"]
    assert [by_sequence[n]["meetingId"] for n in (1, 2)] == ["meeting-1", "meeting-1"]
