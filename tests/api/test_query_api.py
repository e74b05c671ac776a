"""The query API: recording shape, timeline, 404s, filters, ordering, paging, parameter
errors, the raw event log endpoint and API_TOKENS."""

from __future__ import annotations

import asyncio
import base64
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
from pydantic import SecretStr
from sqlalchemy import update
from sqlalchemy.ext.asyncio import create_async_engine

from app.ledger.tables import Recording
from tests.conftest import ClientFactory
from tests.support.client import WebhookClient
from tests.support.payloads import file_entry, track_webhook

RECORDING_FIELDS = {
    "id",
    "meetingId",
    "sessionId",
    "participantId",
    "kind",
    "sequence",
    "status",
    "startingAt",
    "startedAt",
    "stoppingAt",
    "stoppedAt",
    "failedAt",
    "createdAt",
    "updatedAt",
    "files",
    "version",
    "stuck",
}
TIMESTAMP_FIELDS = ("startingAt", "startedAt", "stoppingAt", "stoppedAt", "failedAt")
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")


async def ok_json(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def list_ids(client: WebhookClient, **params: Any) -> list[str]:
    body = await ok_json(await client.get("/v1/recordings", limit=500, **params))
    assert body["nextCursor"] is None
    return [item["id"] for item in body["items"]]


def assert_validation_error(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_failed"
    fields = [entry["field"] for entry in body["detail"]]
    assert any(name == field or name.startswith(field + ".") for name in fields), fields


def assert_iso_utc(value: object) -> None:
    assert isinstance(value, str) and ISO_UTC.match(value), value
    assert datetime.fromisoformat(value).utcoffset() == timedelta(0)


async def test_recording_shape(client: WebhookClient) -> None:
    extra_file = {**file_entry("a"), "size": 99, "meta": {"codec": "opus"}}
    for status in ("starting", "started"):
        await client.deliver(track_webhook(status))
    answer = await client.deliver(track_webhook("stopped", files=[extra_file]))

    [listed] = (await ok_json(await client.get("/v1/recordings")))["items"]
    detail = await ok_json(await client.get(f"/v1/recordings/{answer['recordingId']}"))

    assert set(listed) == RECORDING_FIELDS
    assert set(detail) == RECORDING_FIELDS | {"events"}
    assert {name: detail[name] for name in RECORDING_FIELDS} == listed
    assert listed["id"] == answer["recordingId"] and isinstance(listed["id"], str)
    assert listed["meetingId"] == "jvsg-8rjn-j304"
    assert listed["sessionId"] == "613731342f27f56e4fc4b6d0"
    assert listed["participantId"] == "abcd"
    assert listed["kind"] == "audio"
    assert listed["sequence"] == 1 and isinstance(listed["sequence"], int)
    assert listed["status"] == "stopped"
    for name in ("startingAt", "startedAt", "stoppedAt", "createdAt", "updatedAt"):
        assert_iso_utc(listed[name])
    assert listed["stoppingAt"] is None and listed["failedAt"] is None
    assert listed["createdAt"] == listed["startingAt"]
    assert listed["updatedAt"] == listed["stoppedAt"]
    assert listed["files"] == [extra_file]


async def test_timeline_in_receive_order(client: WebhookClient) -> None:
    sent = ["starting", "starting", "stopped", "started", "failed", "stopped"]
    answers = []
    for index, status in enumerate(sent):
        files = [file_entry(f"f{index}")] if index == 5 else None
        answers.append(await client.deliver(track_webhook(status, files=files)))
    await client.deliver(track_webhook("starting", session_id="other"))

    detail = await ok_json(await client.get(f"/v1/recordings/{answers[0]['recordingId']}"))

    events = detail["events"]
    assert [e["webhookType"] for e in events] == [
        f"participant-track-recording-{status}" for status in sent
    ]
    assert [e["outcome"] for e in events] == [
        "applied",
        "duplicate",
        "applied",
        "applied",
        "applied",
        "applied",
    ]
    assert [e["eventId"] for e in events] == [a["eventId"] for a in answers]
    for event in events:
        assert {"webhookType", "receivedAt", "outcome"} <= set(event)
        assert_iso_utc(event["receivedAt"])
    received = [datetime.fromisoformat(e["receivedAt"]) for e in events]
    assert received == sorted(received)
    assert detail["startingAt"] == events[0]["receivedAt"]
    assert detail["stoppedAt"] == events[2]["receivedAt"]


UNKNOWN_IDS = [
    "999999",
    "0",
    "abc",
    "-1",
    "1.5",
    "1e3",
    "0x1",
    "9223372036854775808",
    "1" * 4000,
    "٣",
    "１",
    "ünïcødé-🎙",
    "1 ",
]


async def test_unknown_recording_id_is_404(client: WebhookClient) -> None:
    await client.deliver(track_webhook("starting"))
    wrong = []

    for recording_id in UNKNOWN_IDS:
        response = await client.get(f"/v1/recordings/{recording_id}")
        ok = (
            response.status_code == 404
            and response.headers["content-type"].startswith("application/json")
            and response.json()["error"] == "recording_not_found"
        )
        if not ok:
            wrong.append((recording_id[:30], len(recording_id), response.status_code))

    assert wrong == []


async def test_ten_thousand_digit_recording_id_is_404(client: WebhookClient) -> None:
    response = await client.get("/v1/recordings/" + "7" * 10_000)

    assert response.status_code == 404, response.text
    assert response.json()["error"] == "recording_not_found"


async def build_catalogue(client: WebhookClient) -> dict[str, str]:
    """Five recordings, each last updated after the previous one."""
    plan = {
        "r1": ("m-1", "s-1", "p-1", "audio", ["starting", "stopped"]),
        "r2": ("m-1", "s-1", "p-2", "video", ["starting", "started"]),
        "r3": ("m-2", "s-2", "p-1", "screen_audio", ["starting"]),
        "r4": ("m-2", "s-2", "p-2", "screen_video", ["started", "failed"]),
        "r5": ("m-3", "s-3", "p-1", "audio", ["stopping"]),
    }
    ids = {}
    for name, (meeting, session, participant, kind, statuses) in plan.items():
        for status in statuses:
            answer = await client.deliver(
                track_webhook(
                    status,
                    meeting_id=meeting,
                    session_id=session,
                    participant_id=participant,
                    kind=kind,
                )
            )
        ids[name] = answer["recordingId"]
    return ids


async def test_filters(client: WebhookClient) -> None:
    ids = await build_catalogue(client)

    def names(found: list[str]) -> list[str]:
        by_id = {value: key for key, value in ids.items()}
        return [by_id[i] for i in found]

    assert names(await list_ids(client)) == ["r5", "r4", "r3", "r2", "r1"]
    assert names(await list_ids(client, meetingId="m-1")) == ["r2", "r1"]
    assert names(await list_ids(client, sessionId="s-2")) == ["r4", "r3"]
    assert names(await list_ids(client, participantId="p-1")) == ["r5", "r3", "r1"]
    assert names(await list_ids(client, kind="audio")) == ["r5", "r1"]
    assert names(await list_ids(client, status="failed")) == ["r4"]
    assert names(await list_ids(client, status=["started", "stopped"])) == ["r2", "r1"]
    assert names(await list_ids(client, status=["starting", "stopping", "failed"])) == [
        "r5",
        "r4",
        "r3",
    ]
    assert names(await list_ids(client, meetingId="m-2", participantId="p-2")) == ["r4"]
    assert names(await list_ids(client, sessionId="s-1", kind="video", status="started")) == ["r2"]
    assert await list_ids(client, meetingId="m-1", kind="screen_video") == []
    assert await list_ids(client, sessionId="no-such-session") == []


async def test_updated_after(client: WebhookClient) -> None:
    ids = await build_catalogue(client)
    r3 = await ok_json(await client.get(f"/v1/recordings/{ids['r3']}"))
    moment = datetime.fromisoformat(r3["updatedAt"])

    assert await list_ids(client, updatedAfter=r3["updatedAt"]) == [ids["r5"], ids["r4"]]
    elsewhere = moment.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    assert await list_ids(client, updatedAfter=elsewhere) == [ids["r5"], ids["r4"]]
    earlier = (moment - timedelta(microseconds=1)).isoformat()
    assert await list_ids(client, updatedAfter=earlier) == [ids["r5"], ids["r4"], ids["r3"]]
    assert len(await list_ids(client, updatedAfter="2000-01-01T00:00:00Z")) == 5
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert await list_ids(client, updatedAfter=future) == []
    assert await list_ids(client, updatedAfter=r3["updatedAt"], kind="audio") == [ids["r5"]]


async def test_newest_updated_first(client: WebhookClient) -> None:
    ids = await build_catalogue(client)

    await client.deliver(
        track_webhook("stopped", session_id="s-1", participant_id="p-2", kind="video")
    )

    listing = (await ok_json(await client.get("/v1/recordings")))["items"]
    assert [item["id"] for item in listing] == [ids[n] for n in ("r2", "r5", "r4", "r3", "r1")]
    stamps = [datetime.fromisoformat(item["updatedAt"]) for item in listing]
    assert stamps == sorted(stamps, reverse=True)


async def walk(client: WebhookClient, path: str, **params: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        query = dict(params) if cursor is None else {**params, "cursor": cursor}
        body = await ok_json(await client.get(path, **query))
        pages.append([item["id"] for item in body["items"]])
        cursor = body["nextCursor"]
        if cursor is None:
            return pages
        assert isinstance(cursor, str) and cursor
        assert len(pages) < 100, "the cursor walk does not end"


async def open_recordings(client: WebhookClient, count: int, prefix: str = "s") -> None:
    for index in range(count):
        await client.deliver(track_webhook("starting", session_id=f"{prefix}-{index}"))


async def test_pagination_walk(client: WebhookClient) -> None:
    await open_recordings(client, 7)
    everything = await list_ids(client)

    pages = await walk(client, "/v1/recordings", limit=2)

    assert [len(page) for page in pages] == [2, 2, 2, 1]
    flat = [recording_id for page in pages for recording_id in page]
    assert flat == everything
    assert len(set(flat)) == 7
    assert await walk(client, "/v1/recordings", limit=7) == [everything]
    assert [len(p) for p in await walk(client, "/v1/recordings", limit=6)] == [6, 1]


async def test_pagination_walk_with_a_filter(client: WebhookClient) -> None:
    await open_recordings(client, 7)
    for index in (1, 2, 4, 6):
        await client.deliver(track_webhook("stopped", session_id=f"s-{index}"))
    stopped = await list_ids(client, status="stopped")
    assert len(stopped) == 4

    pages = await walk(client, "/v1/recordings", limit=3, status="stopped")

    assert [len(page) for page in pages] == [3, 1]
    assert [i for page in pages for i in page] == stopped


async def test_pagination_walk_with_equal_updated_at(
    client: WebhookClient, database_url: str
) -> None:
    await open_recordings(client, 7)
    # Force ties on the sort key: the cursor must still visit each recording once.
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            tie = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
            await connection.execute(update(Recording).values(updated_at=tie))
    finally:
        await engine.dispose()
    everything = await list_ids(client)

    pages = await walk(client, "/v1/recordings", limit=2)

    flat = [recording_id for page in pages for recording_id in page]
    assert sorted(flat) == sorted(everything) and len(set(flat)) == 7
    assert flat == everything


async def test_limit_default_and_maximum(client: WebhookClient) -> None:
    sends = [
        client.post(track_webhook("starting", session_id=f"bulk-{index}")) for index in range(51)
    ]
    assert {r.status_code for r in await asyncio.gather(*sends)} == {200}

    first = await ok_json(await client.get("/v1/recordings"))
    assert len(first["items"]) == 50
    assert first["nextCursor"] is not None
    rest = await ok_json(await client.get("/v1/recordings", cursor=first["nextCursor"]))
    assert len(rest["items"]) == 1 and rest["nextCursor"] is None
    widest = await ok_json(await client.get("/v1/recordings", limit=500))
    assert len(widest["items"]) == 51 and widest["nextCursor"] is None
    assert_validation_error(await client.get("/v1/recordings", limit=501), "query.limit")


def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


BAD_RECORDING_PARAMS: list[tuple[dict[str, Any], str]] = [
    ({"limit": 0}, "query.limit"),
    ({"limit": -1}, "query.limit"),
    ({"limit": 501}, "query.limit"),
    ({"limit": "ten"}, "query.limit"),
    ({"cursor": "not a cursor!"}, "query.cursor"),
    ({"cursor": _cursor({"a": 1})}, "query.cursor"),
    ({"cursor": _cursor(["yesterday", 1])}, "query.cursor"),
    ({"cursor": _cursor(["2024-01-01T00:00:00", 1])}, "query.cursor"),
    ({"cursor": _cursor(["2024-01-01T00:00:00+00:00", 0])}, "query.cursor"),
    ({"cursor": _cursor(["2024-01-01T00:00:00+00:00", 2**63])}, "query.cursor"),
    ({"cursor": _cursor([5])}, "query.cursor"),
    ({"cursor": base64.urlsafe_b64encode(b"\xff\xfe\x00").decode()}, "query.cursor"),
    ({"cursor": "A" * 600}, "query.cursor"),
    ({"kind": "hologram"}, "query.kind"),
    ({"kind": "AUDIO"}, "query.kind"),
    ({"status": "paused"}, "query.status"),
    ({"status": ["stopped", "done"]}, "query.status"),
    ({"updatedAfter": "yesterday"}, "query.updatedAfter"),
    ({"updatedAfter": "2024-13-01T00:00:00Z"}, "query.updatedAfter"),
    ({"meetingId": ""}, "query.meetingId"),
    ({"sessionId": "a\x00b"}, "query.sessionId"),
]


async def test_bad_recording_parameters_are_422(client: WebhookClient) -> None:
    await open_recordings(client, 1)
    for params, field in BAD_RECORDING_PARAMS:
        response = await client.get("/v1/recordings", **params)
        try:
            assert_validation_error(response, field)
        except AssertionError as exc:
            raise AssertionError(f"GET /v1/recordings with {params}: {exc}") from None


async def test_good_hand_made_cursor_is_accepted(client: WebhookClient) -> None:
    await open_recordings(client, 2)

    body = await ok_json(
        await client.get("/v1/recordings", cursor=_cursor(["2999-01-01T00:00:00+00:00", 1]))
    )

    assert len(body["items"]) == 2


async def test_webhook_events_filters_and_paging(client: WebhookClient) -> None:
    for status in ("starting", "started", "started"):
        await client.deliver(track_webhook(status, session_id="s-a"))
    await client.deliver(track_webhook("starting", session_id="s-b"))
    await client.deliver({"webhookType": "session-started", "data": {"sessionId": "s-a"}})
    bad = track_webhook("stopped", session_id="s-b")
    bad["data"]["kind"] = "hologram"
    assert (await client.post(bad)).status_code == 422

    async def outcomes(**params: Any) -> list[tuple[str, str | None, str]]:
        body = await ok_json(await client.get("/v1/webhook-events", **params))
        return [(e["webhookType"], e["sessionId"], e["outcome"]) for e in body["items"]]

    everything = await outcomes()
    assert len(everything) == 6
    assert everything[0] == ("participant-track-recording-stopped", "s-b", "rejected")
    assert everything[-1] == ("participant-track-recording-starting", "s-a", "applied")
    assert await outcomes(sessionId="s-a") == [
        ("session-started", "s-a", "ignored"),
        ("participant-track-recording-started", "s-a", "duplicate"),
        ("participant-track-recording-started", "s-a", "applied"),
        ("participant-track-recording-starting", "s-a", "applied"),
    ]
    assert [t for t, _s, _o in await outcomes(webhookType="session-started")] == ["session-started"]
    assert len(await outcomes(webhookType="participant-track-recording-starting")) == 2
    assert (
        len(await outcomes(webhookType=["session-started", "participant-track-recording-started"]))
        == 3
    )
    assert [o for _t, _s, o in await outcomes(outcome="duplicate")] == ["duplicate"]
    assert {o for _t, _s, o in await outcomes(outcome=["ignored", "rejected"])} == {
        "ignored",
        "rejected",
    }
    assert await outcomes(sessionId="s-b", outcome="applied") == [
        ("participant-track-recording-starting", "s-b", "applied")
    ]

    all_ids = [e["id"] for e in (await ok_json(await client.get("/v1/webhook-events")))["items"]]
    pages = await walk(client, "/v1/webhook-events", limit=4)
    assert [len(page) for page in pages] == [4, 2]
    assert [i for page in pages for i in page] == all_ids
    filtered = await walk(client, "/v1/webhook-events", limit=1, sessionId="s-a")
    assert [len(page) for page in filtered] == [1, 1, 1, 1]


BAD_EVENT_PARAMS: list[tuple[dict[str, Any], str]] = [
    ({"limit": 0}, "query.limit"),
    ({"limit": 501}, "query.limit"),
    ({"outcome": "maybe"}, "query.outcome"),
    ({"outcome": ["applied", "APPLIED"]}, "query.outcome"),
    ({"cursor": "!!"}, "query.cursor"),
    ({"cursor": _cursor(["2024-01-01T00:00:00+00:00", 3])}, "query.cursor"),
    ({"cursor": _cursor([0])}, "query.cursor"),
    ({"sessionId": ""}, "query.sessionId"),
    ({"webhookType": ""}, "query.webhookType"),
]


async def test_bad_webhook_event_parameters_are_422(client: WebhookClient) -> None:
    await client.deliver(track_webhook("starting"))
    for params, field in BAD_EVENT_PARAMS:
        response = await client.get("/v1/webhook-events", **params)
        try:
            assert_validation_error(response, field)
        except AssertionError as exc:
            raise AssertionError(f"GET /v1/webhook-events with {params}: {exc}") from None


def is_stream(operation: dict[str, Any]) -> bool:
    """An event stream never ends, so an in-process client cannot read a granted one (the
    stream's own tests run against a real server, tests/feed/test_processes.py)."""
    return "text/event-stream" in operation.get("responses", {}).get("200", {}).get("content", {})


async def v1_paths(client: WebhookClient, recording_id: str, streams: bool = False) -> list[str]:
    """Every GET path under /v1 that the OpenAPI document lists, made concrete (event
    streams only if asked for)."""
    spec = await ok_json(await client.get("/openapi.json"))
    found = []
    for path, operations in spec["paths"].items():
        if path.startswith("/v1") and "get" in operations:
            if streams or not is_stream(operations["get"]):
                found.append(re.sub(r"\{[^}]+\}", recording_id, path))
    assert {"/v1/recordings", "/v1/webhook-events", f"/v1/recordings/{recording_id}"} <= set(found)
    return found


async def test_api_tokens(make_client: ClientFactory) -> None:
    client = await make_client(api_tokens=[SecretStr("t1"), SecretStr("t2")])
    # The webhook endpoint and the probes never need a token.
    answer = await client.deliver(track_webhook("starting"))
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200

    readable = await v1_paths(client, answer["recordingId"])
    for path in [
        *await v1_paths(client, answer["recordingId"], streams=True),
        "/v1/recordings/999999",
    ]:
        for token in ("t1", "t2"):
            if path not in readable and not path.endswith("999999"):
                continue
            granted = await client.http.get(path, headers={"Authorization": f"Bearer {token}"})
            expected = 404 if path.endswith("999999") else 200
            assert granted.status_code == expected, (path, token, granted.text)
        refusals: list[dict[str, str]] = [
            {},
            {"Authorization": ""},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer "},
            {"Authorization": "Bearer t3"},
            {"Authorization": "Bearer T1"},
            {"Authorization": "Bearer t1t2"},
            {"Authorization": "Bearer t1,t2"},
            {"Authorization": "Basic t1"},
            {"Authorization": "Token t1"},
            {"Authorization": "t1"},
            {"Authorization": "Basic " + base64.b64encode(b"t1:").decode()},
        ]
        for headers in refusals:
            refused = await client.http.get(path, headers=headers)
            assert refused.status_code == 401, (path, headers, refused.text)
            assert refused.json()["error"]


async def test_no_tokens_means_open_v1(client: WebhookClient) -> None:
    answer = await client.deliver(track_webhook("starting"))

    for path in await v1_paths(client, answer["recordingId"]):
        assert (await client.get(path)).status_code == 200, path
