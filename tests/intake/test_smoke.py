from tests.support.client import WebhookClient
from tests.support.payloads import file_entry, track_webhook


async def test_full_lifecycle_then_query(client: WebhookClient) -> None:
    for status in ("starting", "started", "stopping"):
        answer = await client.deliver(track_webhook(status))
        assert answer["status"] == "applied"
    stopped = await client.deliver(track_webhook("stopped", files=[file_entry("a")]))
    recording = (await client.get(f"/v1/recordings/{stopped['recordingId']}")).json()
    assert recording["status"] == "stopped"
    assert [f["filePath"] for f in recording["files"]] == ["/encoded/videos/a.mp4"]
    assert [e["outcome"] for e in recording["events"]] == ["applied"] * 4
