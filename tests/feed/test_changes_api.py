"""/v1/changes: the feed's contract as clients see it, on both databases, in one process."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from tests.support.client import WebhookClient
from tests.support.payloads import file_entry, track_webhook


async def changes(client: WebhookClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/v1/changes", **params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    assert isinstance(page["nextCursor"], str) and page["nextCursor"]
    return page


SENTINEL = "sentinel"


async def settled(client: WebhookClient) -> None:
    """Until every change committed so far is readable. The feed serves a change once every
    older transaction of the cluster has finished (docs/ARCHITECTURE.md, "The change feed"),
    so a page can be empty while another database's transaction is in flight: a sentinel
    change, committed after everything so far, shows when that is over."""
    cursor = (await changes(client, cursor="now"))["nextCursor"]
    session = f"{SENTINEL}-{uuid.uuid4().hex[:8]}"
    await client.deliver(track_webhook("started", session_id=session))
    while True:
        page = await changes(client, cursor=cursor, sessionId=session, wait=5)
        if page["items"]:
            return
        cursor = page["nextCursor"]


async def follow(
    client: WebhookClient, cursor: str | None = None, **params: Any
) -> tuple[list[dict[str, Any]], str]:
    """Every change so far: pages until an empty one, once everything is readable; the
    items (but the sentinels) and the cursor to continue from."""
    await settled(client)
    items: list[dict[str, Any]] = []
    while True:
        page = await changes(client, **params, **({"cursor": cursor} if cursor else {}))
        cursor = page["nextCursor"]
        if not page["items"]:
            return items, cursor
        items += [i for i in page["items"] if not i["sessionId"].startswith(SENTINEL)]


async def test_the_first_walk_is_every_recording_then_it_follows(client: WebhookClient) -> None:
    for session in ("a", "b", "c"):
        await client.deliver(track_webhook("started", session_id=session))
    first, cursor = await follow(client, limit=2)
    assert sorted(item["sessionId"] for item in first) == ["a", "b", "c"]
    listed = [
        item
        for item in (await client.get("/v1/recordings")).json()["items"]
        if not item["sessionId"].startswith(SENTINEL)
    ]
    assert {item["id"]: item for item in first} == {item["id"]: item for item in listed}

    assert (await follow(client, cursor))[0] == []  # nothing changed since
    stopped = await client.deliver(
        track_webhook("stopped", session_id="b", files=[file_entry("b")])
    )
    later, cursor = await follow(client, cursor)
    assert [(item["id"], item["status"], item["version"]) for item in later] == [
        (stopped["recordingId"], "stopped", 2)
    ]
    assert later[0]["files"] == [file_entry("b")]


async def test_duplicates_ignored_and_rejected_deliveries_are_not_changes(
    client: WebhookClient,
) -> None:
    await client.deliver(track_webhook("started", session_id="d"))
    _, cursor = await follow(client)
    assert (await client.deliver(track_webhook("started", session_id="d")))["status"] == (
        "duplicate"
    )
    await client.deliver({"webhookType": "session-started", "data": {"sessionId": "d"}})
    bad = track_webhook("stopped", session_id="d")
    bad["data"]["kind"] = "webcam"
    assert (await client.post(bad)).status_code == 422
    assert (await follow(client, cursor))[0] == []


async def test_version_grows_with_every_change_and_shows_everywhere(
    client: WebhookClient,
) -> None:
    answers = [
        await client.deliver(track_webhook(status, session_id="v"))
        for status in ("starting", "started", "started", "stopping")
    ]
    recording_id = answers[0]["recordingId"]
    detail = (await client.get(f"/v1/recordings/{recording_id}")).json()
    listed = (await client.get("/v1/recordings", sessionId="v")).json()["items"][0]
    fed = (await follow(client, sessionId="v"))[0]
    assert detail["version"] == listed["version"] == fed[-1]["version"] == 3  # 3 applied


async def test_filters_and_the_cursor_moves_past_what_does_not_match(
    client: WebhookClient,
) -> None:
    await client.deliver(track_webhook("started", session_id="keep", kind="video"))
    for n in range(5):
        await client.deliver(track_webhook("started", session_id=f"other-{n}"))
    await client.deliver(track_webhook("stopped", session_id="keep", kind="audio"))
    kept, cursor = await follow(client, sessionId="keep", status=["started", "stopped"])
    assert sorted((item["kind"], item["status"]) for item in kept) == [
        ("audio", "stopped"),
        ("video", "started"),
    ]
    only_video, _ = await follow(client, sessionId="keep", kind="video")
    assert [item["kind"] for item in only_video] == ["video"]
    # The cursor after a filtered walk is past the other sessions' changes too: an
    # unfiltered walk from it sees only what changes next.
    await client.deliver(track_webhook("started", session_id="after"))
    after, _ = await follow(client, cursor)
    assert [item["sessionId"] for item in after] == ["after"]


async def test_cursor_now_starts_at_the_end(client: WebhookClient) -> None:
    await client.deliver(track_webhook("started", session_id="old"))
    await settled(client)
    page = await changes(client, cursor="now")
    assert page["items"] == []
    await client.deliver(track_webhook("started", session_id="new"))
    items, _ = await follow(client, page["nextCursor"])
    assert [item["sessionId"] for item in items] == ["new"]


async def test_a_waiting_request_answers_when_a_matching_change_commits(
    client: WebhookClient,
) -> None:
    cursor = (await changes(client, cursor="now"))["nextCursor"]
    started = time.monotonic()
    waiting = asyncio.create_task(
        client.get("/v1/changes", cursor=cursor, sessionId="wanted", wait=20)
    )
    await asyncio.sleep(0.3)
    await client.deliver(track_webhook("started", session_id="unwanted"))
    await asyncio.sleep(0.3)
    assert not waiting.done(), "answered for a change that does not match"
    await client.deliver(track_webhook("started", session_id="wanted"))
    response = await asyncio.wait_for(waiting, 5)
    assert response.status_code == 200
    assert [item["sessionId"] for item in response.json()["items"]] == ["wanted"]
    assert time.monotonic() - started < 5


async def test_a_wait_with_nothing_to_see_answers_empty_at_its_end(
    client: WebhookClient,
) -> None:
    cursor = (await changes(client, cursor="now"))["nextCursor"]
    started = time.monotonic()
    page = await changes(client, cursor=cursor, wait=0.5)
    assert page["items"] == []
    assert 0.45 < time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cursor": "nope"}, "query.cursor"),
        ({"cursor": "WyIyMDI2LTExLTIxVDEyOjM0OjM1KzAwOjAwIiwyXQ"}, "query.cursor"),  # a list cursor
        ({"limit": 0}, "query.limit"),
        ({"limit": 1001}, "query.limit"),
        ({"wait": -1}, "query.wait"),
        ({"wait": 61}, "query.wait"),
        ({"wait": "soon"}, "query.wait"),
        ({"status": "paused"}, "query.status.0"),
        ({"kind": "webcam"}, "query.kind"),
        ({"sessionId": ""}, "query.sessionId"),
    ],
)
async def test_bad_parameters_are_named(
    client: WebhookClient, params: dict[str, Any], field: str
) -> None:
    response = await client.get("/v1/changes", **params)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_failed"
    assert field in [problem["field"] for problem in body["detail"]]


async def test_a_bad_last_event_id_is_named(client: WebhookClient) -> None:
    response = await client.http.get(
        "/v1/changes/stream", headers={"Last-Event-ID": "nope"}, timeout=5
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "header.Last-Event-ID"
