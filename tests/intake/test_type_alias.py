"""`type` as an alias of `webhookType` (issue 10, item 11).

VideoSDK's server SDK reads the event type as `parsed.webhookType ?? parsed.type`; the
intake does the same: `webhookType` wins whenever it is present and not null, otherwise
`type` is the webhook's type. The log keeps the payload exactly as received.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from app.core.config import Settings
from app.ledger.engine import create_engine
from app.ledger.rebuild import rebuild
from tests.support.client import WebhookClient
from tests.support.payloads import LIFECYCLE, file_entry, track_webhook

TRACK = "participant-track-recording-"


def type_only(status: str, **overrides: Any) -> dict[str, Any]:
    """A track webhook that names its type under `type` and has no `webhookType`."""
    payload = track_webhook(status, **overrides)
    payload["type"] = payload.pop("webhookType")
    return payload


async def log_of(client: WebhookClient) -> list[dict[str, Any]]:
    response = await client.get("/v1/webhook-events")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return sorted(items, key=lambda item: int(item["id"]))


async def recordings_of(client: WebhookClient) -> list[dict[str, Any]]:
    response = await client.get("/v1/recordings")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_type_only_track_webhook_is_applied_and_logged_as_received(
    client: WebhookClient,
) -> None:
    payload = type_only("starting")
    body = orjson.dumps(payload)

    answer = ok(await client.post_raw(body))

    assert answer["status"] == "applied"
    assert answer["recordingId"] is not None
    [recording] = await recordings_of(client)
    assert recording["status"] == "starting"
    assert recording["sessionId"] == payload["data"]["sessionId"]
    [event] = await log_of(client)
    assert event["id"] == answer["eventId"]
    assert event["webhookType"] == f"{TRACK}starting"  # the type it was applied as
    assert event["outcome"] == "applied"
    assert event["payload"] == payload  # as received: no webhookType added
    assert "webhookType" not in event["payload"]


async def test_type_only_lifecycle_with_files_and_a_repeat(client: WebhookClient) -> None:
    files = [file_entry("alias")]
    answers = [
        ok(await client.post(type_only(status, files=files if status == "stopped" else None)))
        for status in ("starting", "started", "stopping", "stopped")
    ]
    repeat = ok(await client.post(type_only("stopped", files=files)))

    assert [answer["status"] for answer in answers] == ["applied"] * 4
    assert repeat["status"] == "duplicate"
    assert len({answer["recordingId"] for answer in [*answers, repeat]}) == 1
    [recording] = await recordings_of(client)
    assert recording["status"] == "stopped"
    assert recording["files"] == files


async def test_type_only_and_webhook_type_deliveries_are_the_same_track(
    client: WebhookClient,
) -> None:
    first = ok(await client.post(type_only("starting")))
    second = ok(await client.post(track_webhook("started")))

    assert first["recordingId"] == second["recordingId"]
    assert [r["status"] for r in await recordings_of(client)] == ["started"]


async def test_type_only_track_webhook_failing_validation_is_422_and_logged(
    client: WebhookClient,
) -> None:
    payload = type_only("started")
    payload["data"]["kind"] = "hologram"

    response = await client.post(payload)

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_failed"
    assert [item["field"] for item in body["detail"]] == ["data.kind"]
    [event] = await log_of(client)
    assert event["outcome"] == "rejected"
    assert event["webhookType"] == f"{TRACK}started"
    assert event["error"] == body["detail"]
    assert event["payload"] == payload
    assert await recordings_of(client) == []


@pytest.mark.parametrize("other", ["session-started", "recording-stopped", "hls-started"])
async def test_type_only_other_webhook_is_ignored_and_logged(
    client: WebhookClient, other: str
) -> None:
    payload = {"type": other, "data": {"meetingId": "m-1", "sessionId": "s-1"}}

    answer = ok(await client.post(payload))

    assert answer["status"] == "ignored"
    assert answer["recordingId"] is None
    [event] = await log_of(client)
    assert event["webhookType"] == other
    assert event["outcome"] == "ignored"
    assert event["payload"] == payload
    assert await recordings_of(client) == []


NEITHER = [
    pytest.param({"data": track_webhook("started")["data"]}, id="missing"),
    pytest.param({**track_webhook("started"), "webhookType": None}, id="webhookType-null"),
    pytest.param({"type": None, "webhookType": None, "data": {}}, id="both-null"),
    pytest.param({"type": 42, "data": {}}, id="type-number"),
    pytest.param({"type": "", "data": {}}, id="type-empty"),
    pytest.param({"type": [f"{TRACK}started"], "data": {}}, id="type-list"),
    pytest.param({"type": "x" * 256, "data": {}}, id="type-256-chars"),
    pytest.param({"type": "a\x00b", "data": {}}, id="type-nul"),
    # webhookType is present (not null), so it is the type, as with `??`; it is unusable.
    pytest.param({"webhookType": 42, "type": f"{TRACK}started", "data": {}}, id="bad-wins"),
    pytest.param({"webhookType": "", "type": f"{TRACK}started", "data": {}}, id="empty-wins"),
]


@pytest.mark.parametrize("payload", NEITHER)
async def test_no_usable_type_is_400_and_not_logged(
    client: WebhookClient, payload: dict[str, Any]
) -> None:
    response = await client.post(payload)

    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_webhook"
    assert "'webhookType'" in body["detail"] or "'type'" in body["detail"]
    assert await log_of(client) == []


async def test_both_present_webhook_type_wins_for_a_track_type(client: WebhookClient) -> None:
    payload = {**track_webhook("started"), "type": "session-started"}

    answer = ok(await client.post(payload))

    assert answer["status"] == "applied"
    [event] = await log_of(client)
    assert event["webhookType"] == f"{TRACK}started"
    assert event["payload"] == payload
    assert [r["status"] for r in await recordings_of(client)] == ["started"]


async def test_both_present_webhook_type_wins_for_another_type(client: WebhookClient) -> None:
    payload = {**track_webhook("started"), "webhookType": "session-started"}
    payload["type"] = f"{TRACK}started"

    answer = ok(await client.post(payload))

    assert answer["status"] == "ignored"
    [event] = await log_of(client)
    assert event["webhookType"] == "session-started"
    assert event["payload"] == payload
    assert await recordings_of(client) == []


async def test_both_present_webhook_type_wins_between_track_types(
    client: WebhookClient,
) -> None:
    payload = {**track_webhook("starting"), "type": f"{TRACK}failed"}

    ok(await client.post(payload))

    assert [r["status"] for r in await recordings_of(client)] == ["starting"]
    [event] = await log_of(client)
    assert event["webhookType"] == f"{TRACK}starting"


async def test_null_webhook_type_falls_back_to_type(client: WebhookClient) -> None:
    payload = {**type_only("starting"), "webhookType": None}

    answer = ok(await client.post(payload))

    assert answer["status"] == "applied"
    [event] = await log_of(client)
    assert event["webhookType"] == f"{TRACK}starting"
    assert event["payload"] == payload


async def test_rebuild_folds_type_only_events(client: WebhookClient, database_url: str) -> None:
    for status in LIFECYCLE[:4]:
        files = [file_entry("r")] if status == "stopped" else None
        ok(await client.post(type_only(status, files=files)))
    engine = create_engine(Settings(database_url=database_url))
    try:
        report = await rebuild(engine, repair=False)
    finally:
        await engine.dispose()

    assert report.events_read == 4
    assert report.differences == [], report.lines()
