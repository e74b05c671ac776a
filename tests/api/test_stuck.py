"""Stuck recordings (issue 11, item 3): not finished, and nothing received for
STUCK_AFTER_SECONDS. `GET /v1/recordings?stuck=` lists them (or the others), every
recording document says whether it is, and `updatedBefore=` bounds a listing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import create_async_engine

from app.ledger.tables import Recording
from tests.api.test_query_api import assert_validation_error, list_ids, ok_json
from tests.conftest import ClientFactory
from tests.support.client import WebhookClient
from tests.support.payloads import file_entry, track_webhook

HOUR = 3600


async def backdate(database_url: str, recording_id: str, age: timedelta) -> str:
    """Make a recording look as if nothing reached it for `age`; returns its updatedAt."""
    moment = datetime.now(UTC) - age
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(Recording).where(Recording.id == int(recording_id)).values(updated_at=moment)
            )
    finally:
        await engine.dispose()
    return moment.isoformat()


async def track(client: WebhookClient, session: str, *statuses: str) -> str:
    """Deliver `statuses` for one track; the id of the recording the last one landed on."""
    answer: dict[str, Any] = {}
    for status in statuses:
        files = [file_entry(session)] if status == "stopped" else None
        answer = await client.deliver(track_webhook(status, session_id=session, files=files))
    recording_id: str = answer["recordingId"]
    return recording_id


async def quiet_catalogue(client: WebhookClient, database_url: str) -> dict[str, str]:
    """Every status, quiet for two hours or half an hour, and one fresh open run."""
    ids = {
        "starting-quiet": await track(client, "a", "starting"),
        "started-quiet": await track(client, "b", "starting", "started"),
        "stopping-recent": await track(client, "c", "starting", "started", "stopping"),
        "stopped-quiet": await track(client, "d", "starting", "started", "stopped"),
        "failed-quiet": await track(client, "e", "starting", "failed"),
        "started-fresh": await track(client, "f", "starting", "started"),
    }
    # Oldest first, so that the listing (newest first) has a known order.
    await backdate(database_url, ids["failed-quiet"], timedelta(hours=5))
    await backdate(database_url, ids["stopped-quiet"], timedelta(hours=4))
    await backdate(database_url, ids["starting-quiet"], timedelta(hours=3))
    await backdate(database_url, ids["started-quiet"], timedelta(hours=2))
    await backdate(database_url, ids["stopping-recent"], timedelta(minutes=30))
    return ids


async def test_stuck_lists_the_open_runs_quiet_for_longer_than_the_threshold(
    make_client: ClientFactory, database_url: str
) -> None:
    client = await make_client(stuck_after_seconds=HOUR)
    ids = await quiet_catalogue(client, database_url)

    def named(found: list[str]) -> list[str]:
        by_id = {value: key for key, value in ids.items()}
        return [by_id[i] for i in found]

    assert named(await list_ids(client, stuck="true")) == ["started-quiet", "starting-quiet"]
    assert named(await list_ids(client, stuck="false")) == [
        "started-fresh",
        "stopping-recent",
        "stopped-quiet",
        "failed-quiet",
    ]
    assert named(await list_ids(client)) == [
        "started-fresh",
        "stopping-recent",
        "started-quiet",
        "starting-quiet",
        "stopped-quiet",
        "failed-quiet",
    ]
    # With the other filters, and a page at a time.
    assert named(await list_ids(client, stuck="true", status="starting")) == ["starting-quiet"]
    assert named(await list_ids(client, stuck="true", status=["stopped", "failed"])) == []
    assert named(await list_ids(client, stuck="true", sessionId="b")) == ["started-quiet"]
    first = await ok_json(await client.get("/v1/recordings", stuck="true", limit=1))
    assert [item["id"] for item in first["items"]] == [ids["started-quiet"]]
    second = await ok_json(
        await client.get("/v1/recordings", stuck="true", limit=1, cursor=first["nextCursor"])
    )
    assert [item["id"] for item in second["items"]] == [ids["starting-quiet"]]
    assert second["nextCursor"] is None


async def whole_feed(client: WebhookClient, count: int) -> list[dict[str, Any]]:
    """The feed from its beginning once it holds `count` recordings. On PostgreSQL a change
    is served once no older transaction of the cluster is in flight, so a page read right
    after the writes can still be short while another database's transaction runs."""
    async with asyncio.timeout(30):
        while True:
            page = await ok_json(await client.get("/v1/changes", limit=500))
            if len(page["items"]) >= count:
                items: list[dict[str, Any]] = page["items"]
                return items
            await asyncio.sleep(0.1)


async def test_the_document_says_whether_a_recording_is_stuck(
    make_client: ClientFactory, database_url: str
) -> None:
    client = await make_client(stuck_after_seconds=HOUR)
    ids = await quiet_catalogue(client, database_url)
    stuck = {"started-quiet", "starting-quiet"}

    listing = (await ok_json(await client.get("/v1/recordings", limit=500)))["items"]
    changes = await whole_feed(client, len(ids))

    by_id = {value: key for key, value in ids.items()}
    assert {by_id[item["id"]] for item in listing if item["stuck"] is True} == stuck
    assert {by_id[item["id"]] for item in listing if item["stuck"] is False} == set(ids) - stuck
    # The feed's items are the same documents; the feed emits only what changed, so it
    # says "stuck" of a change it sends and never announces that a recording became so.
    assert {item["id"]: item["stuck"] for item in changes} == {
        item["id"]: item["stuck"] for item in listing
    }
    for name, recording_id in ids.items():
        detail = await ok_json(await client.get(f"/v1/recordings/{recording_id}"))
        assert detail["stuck"] is (name in stuck), name


async def test_a_stuck_recording_that_receives_its_event_is_stuck_no_more(
    make_client: ClientFactory, database_url: str
) -> None:
    client = await make_client(stuck_after_seconds=HOUR)
    recording_id = await track(client, "late", "starting", "started")
    await backdate(database_url, recording_id, timedelta(hours=7))
    assert await list_ids(client, stuck="true") == [recording_id]

    answer = await client.deliver(
        track_webhook("stopped", session_id="late", files=[file_entry("late")])
    )

    assert answer["recordingId"] == recording_id
    assert await list_ids(client, stuck="true") == []
    detail = await ok_json(await client.get(f"/v1/recordings/{recording_id}"))
    assert (detail["status"], detail["stuck"]) == ("stopped", False)


async def test_a_retried_started_after_stopped_opens_a_run_that_becomes_stuck(
    make_client: ClientFactory, database_url: str
) -> None:
    # A -started retried after -stopped opens run 2 (it may be a real restart), and
    # nothing ever follows it: run 2 is what an operator must see; run 1 stays unstuck.
    client = await make_client(stuck_after_seconds=HOUR)
    first = await track(client, "phantom", "starting", "started", "stopped")
    second = await track(client, "phantom", "started")
    assert second != first
    await backdate(database_url, first, timedelta(hours=9))
    await backdate(database_url, second, timedelta(hours=8))

    assert await list_ids(client, stuck="true") == [second]
    detail = await ok_json(await client.get(f"/v1/recordings/{second}"))
    assert (detail["sequence"], detail["status"], detail["stuck"]) == (2, "started", True)


async def test_the_default_threshold_is_six_hours(client: WebhookClient, database_url: str) -> None:
    quiet = await track(client, "six", "starting")
    quieter = await track(client, "seven", "starting")
    await backdate(database_url, quiet, timedelta(hours=5, minutes=59))
    await backdate(database_url, quieter, timedelta(hours=6, minutes=1))

    assert await list_ids(client, stuck="true") == [quieter]


async def test_updated_before_is_exclusive_and_combines_with_updated_after(
    client: WebhookClient, database_url: str
) -> None:
    ids = [await track(client, f"u{n}", "starting") for n in range(4)]
    stamps = [
        await backdate(database_url, recording_id, timedelta(hours=10 - n))
        for n, recording_id in enumerate(ids)
    ]

    assert await list_ids(client, updatedBefore=stamps[2]) == [ids[1], ids[0]]
    assert await list_ids(client, updatedBefore=stamps[2], updatedAfter=stamps[0]) == [ids[1]]
    assert await list_ids(client, updatedBefore=stamps[0]) == []
    assert await list_ids(client, updatedBefore=stamps[3], updatedAfter=stamps[3]) == []
    everything = await list_ids(client, updatedBefore="2999-01-01T00:00:00Z")
    assert everything == list(reversed(ids))


async def test_bad_stuck_and_updated_before_are_422_naming_the_parameter(
    client: WebhookClient,
) -> None:
    for params, field in [
        ({"stuck": "maybe"}, "query.stuck"),
        ({"stuck": ""}, "query.stuck"),
        ({"updatedBefore": "yesterday"}, "query.updatedBefore"),
        ({"updatedBefore": "2024-02-30T00:00:00Z"}, "query.updatedBefore"),
    ]:
        assert_validation_error(await client.get("/v1/recordings", **params), field)
