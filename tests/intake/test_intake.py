"""Intake through HTTP: the five track types, other VideoSDK types, kept extras, the raw
event log, and "2xx only after commit"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.main import create_app
from tests.conftest import ClientFactory, make_settings
from tests.support.client import WebhookClient
from tests.support.payloads import LIFECYCLE, file_entry, track_webhook
from tests.support.signing import Signer


async def log_items(client: WebhookClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/v1/webhook-events", **{"limit": 500, **params})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def recording_ids(client: WebhookClient) -> list[str]:
    response = await client.get("/v1/recordings", limit=500)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


@pytest.mark.parametrize("status", LIFECYCLE)
async def test_each_track_type_is_applied(client: WebhookClient, status: str) -> None:
    response = await client.post(track_webhook(status))

    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"status", "eventId", "recordingId"}
    assert answer["status"] == "applied"
    assert isinstance(answer["eventId"], str) and answer["eventId"]
    assert isinstance(answer["recordingId"], str) and answer["recordingId"]
    recording = (await client.get(f"/v1/recordings/{answer['recordingId']}")).json()
    assert recording["status"] == status
    assert recording[f"{status}At"] is not None
    [logged] = await log_items(client)
    assert logged["id"] == answer["eventId"]
    assert logged["recordingId"] == answer["recordingId"]
    assert logged["webhookType"] == f"participant-track-recording-{status}"
    assert logged["outcome"] == "applied"


OTHER_VIDEOSDK_TYPES: list[dict[str, Any]] = [
    {"webhookType": "session-started", "data": {"meetingId": "m-1", "sessionId": "s-other"}},
    {"webhookType": "session-ended", "data": {"meetingId": "m-1", "sessionId": "s-other"}},
    {"webhookType": "recording-stopped", "data": {"meetingId": "m-1", "filePath": "/r.mp4"}},
    {"webhookType": "hls-started", "data": {"meetingId": "m-1", "playbackHlsUrl": "https://x"}},
    {"webhookType": "participant-joined", "data": {"participantId": "p", "name": "Zoë"}},
    # Anything else with a string webhookType, however odd its data.
    {"webhookType": "some-future-event"},
    {"webhookType": "some-future-event", "data": "not an object"},
    {"webhookType": "participant-track-recording-paused", "data": {"kind": "hologram"}},
    {"webhookType": "PARTICIPANT-TRACK-RECORDING-STARTED", "data": {}},
]


async def test_other_webhook_types_are_stored_and_ignored(client: WebhookClient) -> None:
    answers = []
    for payload in OTHER_VIDEOSDK_TYPES:
        response = await client.post(payload)
        assert response.status_code == 200, (payload, response.text)
        answers.append(response.json())

    logged = {event["id"]: event for event in await log_items(client)}
    assert len(logged) == len(OTHER_VIDEOSDK_TYPES)
    for payload, answer in zip(OTHER_VIDEOSDK_TYPES, answers, strict=True):
        assert (answer["status"], answer["recordingId"]) == ("ignored", None), payload
        event = logged[answer["eventId"]]
        assert event["outcome"] == "ignored"
        assert event["webhookType"] == payload["webhookType"]
        assert event["recordingId"] is None
        assert event["payload"] == payload
    assert await recording_ids(client) == []


async def test_ignored_type_is_logged_with_the_ids_it_names(client: WebhookClient) -> None:
    payload = {"webhookType": "session-started", "data": {"meetingId": "m-9", "sessionId": "s-9"}}
    await client.deliver(payload)

    [logged] = await log_items(client, sessionId="s-9", outcome="ignored")
    assert logged["meetingId"] == "m-9"
    assert logged["sessionId"] == "s-9"


async def test_unknown_fields_everywhere_are_kept(client: WebhookClient) -> None:
    file_a = {**file_entry("a"), "size": 1234, "meta": {"codec": "opus", "channels": [1, 2]}}
    file_b = {**file_entry("b"), "duration": 12.5, "note": "naïve ✓"}
    payload = track_webhook("stopped", files=[file_a, file_b])
    payload["deliveryId"] = "d-42"
    payload["nested"] = {"deep": [1, {"x": None}], "flag": True}
    payload["data"]["recordingMode"] = "composite"
    payload["data"]["extra"] = {"any": ["thing"]}

    answer = await client.deliver(payload)

    [logged] = await log_items(client)
    assert logged["payload"] == payload
    recording = (await client.get(f"/v1/recordings/{answer['recordingId']}")).json()
    assert recording["files"] == [file_a, file_b]


async def test_the_log_records_every_outcome(client: WebhookClient) -> None:
    applied = await client.deliver(track_webhook("starting"))
    duplicate = await client.deliver(track_webhook("starting"))
    ignored = await client.deliver({"webhookType": "session-started", "data": {}})
    bad = track_webhook("started")
    bad["data"]["kind"] = "hologram"
    del bad["data"]["participantId"]
    rejected = await client.post(bad)

    assert (applied["status"], duplicate["status"], ignored["status"]) == (
        "applied",
        "duplicate",
        "ignored",
    )
    assert duplicate["recordingId"] == applied["recordingId"]
    assert rejected.status_code == 422, rejected.text
    problem = rejected.json()
    assert problem["error"] == "validation_failed"
    assert {entry["field"] for entry in problem["detail"]} == {"data.kind", "data.participantId"}

    newest_first = await log_items(client)
    assert [e["outcome"] for e in newest_first] == ["rejected", "ignored", "duplicate", "applied"]
    assert [e["id"] for e in newest_first[1:]] == [
        ignored["eventId"],
        duplicate["eventId"],
        applied["eventId"],
    ]
    logged_rejection = newest_first[0]
    assert logged_rejection["payload"] == bad
    assert logged_rejection["recordingId"] is None
    assert logged_rejection["webhookType"] == "participant-track-recording-started"
    assert logged_rejection["error"] == problem["detail"]
    for event in newest_first[1:]:
        assert event["error"] is None
        assert event["receivedAt"].endswith("Z")


INVALID_TRACK_DATA: list[tuple[dict[str, Any], str]] = [
    ({"meetingId": None}, "data.meetingId"),
    ({"sessionId": ""}, "data.sessionId"),
    ({"participantId": 7}, "data.participantId"),
    ({"participantId": "x" * 256}, "data.participantId"),
    ({"sessionId": "a\x00b"}, "data.sessionId"),
    ({"kind": "hologram"}, "data.kind"),
    ({"fileDetails": [{"filePath": "/x.mp4"}]}, "data.fileDetails.0.fileUrl"),
    ({"fileDetails": [{"filePath": "", "fileUrl": "https://x"}]}, "data.fileDetails.0.filePath"),
    ({"fileDetails": "nope"}, "data.fileDetails"),
]


async def test_rejected_delivery_names_the_field_and_is_logged(client: WebhookClient) -> None:
    for change, field in INVALID_TRACK_DATA:
        payload = track_webhook("stopped")
        payload["data"].update(change)
        payload["data"] = {k: v for k, v in payload["data"].items() if v is not None}

        response = await client.post(payload)

        assert response.status_code == 422, (change, response.text)
        assert field in [entry["field"] for entry in response.json()["detail"]], change
        logged = (await log_items(client, outcome="rejected"))[0]
        assert logged["payload"] == payload
        assert field in [entry["field"] for entry in logged["error"]], change
    assert len(await log_items(client, outcome="rejected")) == len(INVALID_TRACK_DATA)
    assert await recording_ids(client) == []


async def test_a_200_is_visible_to_a_fresh_app_instance(make_client: ClientFactory) -> None:
    first = await make_client()
    answer = await first.deliver(track_webhook("stopped", files=[file_entry("a")]))

    fresh = await make_client()
    recording = (await fresh.get(f"/v1/recordings/{answer['recordingId']}")).json()
    assert recording["status"] == "stopped"
    assert [f["filePath"] for f in recording["files"]] == ["/encoded/videos/a.mp4"]
    assert [e["id"] for e in await log_items(fresh)] == [answer["eventId"]]


async def test_a_200_is_visible_on_a_separate_connection(
    client: WebhookClient, database_url: str
) -> None:
    answer = await client.deliver(track_webhook("starting"))

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            status = (
                await connection.execute(
                    text("SELECT status FROM recordings WHERE id = :id"),
                    {"id": int(answer["recordingId"])},
                )
            ).scalar_one()
            outcome = (
                await connection.execute(
                    text("SELECT outcome FROM webhook_events WHERE id = :id"),
                    {"id": int(answer["eventId"])},
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    assert (status, outcome) == ("starting", "applied")


# A deferred constraint that every new log row violates: the INSERT succeeds, the COMMIT
# fails. If the service answered before committing, the client would see a 2xx here.
_FAILING_COMMIT_SQL = {
    "postgresql": (
        [
            "CREATE TABLE commit_guard_parent (id bigint PRIMARY KEY)",
            "CREATE TABLE commit_guard (ref bigint REFERENCES commit_guard_parent (id) "
            "DEFERRABLE INITIALLY DEFERRED)",
            "CREATE FUNCTION commit_guard_fn() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO commit_guard VALUES (-1); RETURN NEW; END $$",
            "CREATE TRIGGER commit_guard_trg AFTER INSERT ON webhook_events "
            "FOR EACH ROW EXECUTE FUNCTION commit_guard_fn()",
        ],
        [
            "DROP TRIGGER IF EXISTS commit_guard_trg ON webhook_events",
            "DROP FUNCTION IF EXISTS commit_guard_fn()",
            "DROP TABLE IF EXISTS commit_guard",
            "DROP TABLE IF EXISTS commit_guard_parent",
        ],
    ),
    "sqlite": (
        [
            "CREATE TABLE commit_guard_parent (id INTEGER PRIMARY KEY)",
            "CREATE TABLE commit_guard (ref INTEGER REFERENCES commit_guard_parent (id) "
            "DEFERRABLE INITIALLY DEFERRED)",
            "CREATE TRIGGER commit_guard_trg AFTER INSERT ON webhook_events "
            "BEGIN INSERT INTO commit_guard VALUES (-1); END",
        ],
        [
            "DROP TRIGGER IF EXISTS commit_guard_trg",
            "DROP TABLE IF EXISTS commit_guard",
            "DROP TABLE IF EXISTS commit_guard_parent",
        ],
    ),
}


@pytest.fixture
async def failing_commits(database_url: str, backend: str) -> AsyncIterator[None]:
    create, drop = _FAILING_COMMIT_SQL[backend]
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            for statement in create:
                await connection.execute(text(statement))
        yield
    finally:
        async with engine.begin() as connection:
            for statement in drop:
                await connection.execute(text(statement))
        await engine.dispose()


@pytest.mark.parametrize(
    "payload",
    [track_webhook("starting"), {"webhookType": "session-started", "data": {}}],
    ids=["track", "ignored"],
)
async def test_no_2xx_when_the_commit_fails(
    failing_commits: None,
    make_client: ClientFactory,
    database_url: str,
    signer: Signer,
    payload: dict[str, Any],
) -> None:
    client = await make_client()
    app = create_app(make_settings(database_url, signer))
    # The status the app actually sent, as a real server would deliver it, even when the
    # app raises afterwards (an unhandled error after a 200 must not hide behind a raise).
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://trackhook.test") as http,
    ):
        response = await WebhookClient(http, signer).post(payload)

    assert response.status_code >= 500, response.text
    assert await log_items(client) == []
    assert await recording_ids(client) == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_other_methods_on_the_intake_path_are_405_and_log_nothing(
    client: WebhookClient, method: str
) -> None:
    # POST is answered by IntakeLane before routing; every other method still reaches
    # FastAPI's router, which knows the path from the route declaration.
    body = orjson.dumps(track_webhook("started"))
    response = await client.http.request(
        method,
        "/webhooks/videosdk",
        content=body,
        headers={"content-type": "application/json", "videosdk-signature": "x"},
    )

    assert response.status_code == 405, response.text
    assert response.json()["error"] == "method_not_allowed"
    assert response.headers["allow"] == "POST"
    assert await log_items(client) == []


async def test_intake_answers_only_its_exact_path(client: WebhookClient) -> None:
    body = orjson.dumps(track_webhook("started"))
    headers = {"content-type": "application/json", "videosdk-signature": client.signer.sign(body)}

    nested = await client.http.post("/webhooks/videosdk/extra", content=body, headers=headers)

    assert nested.status_code == 404, nested.text
    assert nested.json()["error"] == "not_found"
    assert await log_items(client) == []
    assert (await client.post_raw(body)).status_code == 200


async def test_intake_is_served_under_a_root_path(client: WebhookClient) -> None:
    # Behind a proxy (`uvicorn --root-path /trackhook`), the path the server passes on
    # includes the root path; the lane must see the same route FastAPI's router sees.
    transport = client.http._transport
    assert isinstance(transport, httpx.ASGITransport)
    mounted = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=transport.app, root_path="/trackhook"),
        base_url="http://trackhook.test",
    )
    body = orjson.dumps(track_webhook("started"))
    headers = {"content-type": "application/json", "videosdk-signature": client.signer.sign(body)}
    async with mounted:
        response = await mounted.post("/trackhook/webhooks/videosdk", content=body, headers=headers)
        unsigned = await mounted.post("/trackhook/webhooks/videosdk", content=body)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "applied"
    assert unsigned.status_code == 401, unsigned.text
    assert [item["id"] for item in await log_items(client)] == [response.json()["eventId"]]
