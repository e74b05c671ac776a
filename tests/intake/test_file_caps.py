"""Files per delivery and per recording are bounded (issue 10, item 10: one recording had
accepted 300,000 files from 30 signed deliveries); beyond, a 422 that names the field, the
delivery logged as rejected, and nothing changed."""

from __future__ import annotations

from typing import Any

from tests.conftest import ClientFactory
from tests.support.payloads import file_entry, track_webhook


def files(prefix: str, count: int) -> list[dict[str, str]]:
    return [file_entry(f"{prefix}-{n}") for n in range(count)]


def assert_too_many_files(response: Any, setting: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_failed"
    (problem,) = body["detail"]
    assert problem["field"] == "data.fileDetails"
    assert problem["type"] == "too_many_files"
    assert setting in problem["message"]


async def test_more_files_than_a_delivery_may_carry_is_422(make_client: ClientFactory) -> None:
    client = await make_client(max_files_per_delivery=3)
    ok = await client.deliver(track_webhook("stopped", session_id="cap-d", files=files("a", 3)))
    response = await client.post(track_webhook("stopped", session_id="cap-d", files=files("b", 4)))

    assert_too_many_files(response, "MAX_FILES_PER_DELIVERY")
    recording = (await client.get(f"/v1/recordings/{ok['recordingId']}")).json()
    assert len(recording["files"]) == 3 and recording["version"] == 1
    log = (await client.get("/v1/webhook-events", sessionId="cap-d")).json()["items"]
    assert [event["outcome"] for event in log] == ["rejected", "applied"]


async def test_more_files_than_a_recording_may_hold_is_422(make_client: ClientFactory) -> None:
    client = await make_client(max_files_per_recording=5)
    ok = await client.deliver(track_webhook("stopped", session_id="cap-r", files=files("a", 3)))
    response = await client.post(track_webhook("failed", session_id="cap-r", files=files("b", 3)))
    fits = await client.deliver(track_webhook("stopping", session_id="cap-r", files=files("c", 2)))

    assert_too_many_files(response, "MAX_FILES_PER_RECORDING")
    assert fits["status"] == "applied"
    recording = (await client.get(f"/v1/recordings/{ok['recordingId']}")).json()
    assert [f["filePath"] for f in recording["files"]] == [
        f["filePath"] for f in files("a", 3) + files("c", 2)
    ]
    assert (recording["status"], recording["version"]) == ("stopped", 2)
    outcomes = [e["outcome"] for e in recording["events"]]
    assert outcomes == ["applied", "applied"]  # the rejected one belongs to no recording
