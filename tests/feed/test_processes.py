"""The change feed across real server processes on PostgreSQL: a waiting request in one
process is woken by a webhook another process received; the stream resumes after a dropped
connection without losing anything, survives a lost listening connection, and ends cleanly
when the server shuts down."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson

from tests.support.databases import asyncpg_dsn
from tests.support.deliveries import Delivery, post_delivery, server_env
from tests.support.payloads import track_webhook
from tests.support.server import ServerProcess
from tests.support.signing import Signer

WAKE_WITHIN_SECONDS = 2.0  # the contract is 100 ms (p99, measured by the bench); far below 20


async def start(servers: list[ServerProcess], database_url: str, signer: Signer) -> ServerProcess:
    server = ServerProcess(env=server_env(database_url, signer), workers=1)
    servers.append(server)
    await asyncio.to_thread(server.start)
    return server


async def deliver(client: httpx.AsyncClient, signer: Signer, payload: dict[str, Any]) -> None:
    response = await post_delivery(client, Delivery.signed(signer, payload))
    assert response.status_code == 200, response.text


async def test_a_request_waiting_in_one_process_is_woken_by_a_webhook_another_received(
    shared_database_url: str, signer: Signer, servers: list[ServerProcess]
) -> None:
    waiting_on, receiving = await asyncio.gather(
        start(servers, shared_database_url, signer), start(servers, shared_database_url, signer)
    )
    async with (
        httpx.AsyncClient(base_url=waiting_on.base_url, timeout=30) as follower,
        httpx.AsyncClient(base_url=receiving.base_url, timeout=30) as sender,
    ):
        for round_number in range(3):
            cursor = (await follower.get("/v1/changes", params={"cursor": "now"})).json()[
                "nextCursor"
            ]
            session = f"wake-{round_number}"
            waiting = asyncio.create_task(
                follower.get(
                    "/v1/changes", params={"cursor": cursor, "sessionId": session, "wait": 20}
                )
            )
            await asyncio.sleep(0.3)
            assert not waiting.done()
            sent = time.monotonic()
            await deliver(sender, signer, track_webhook("started", session_id=session))
            answered = await asyncio.wait_for(waiting, 20)
            took = time.monotonic() - sent
            assert answered.status_code == 200
            assert [item["sessionId"] for item in answered.json()["items"]] == [session]
            assert took < WAKE_WITHIN_SECONDS, f"woken {took:.3f}s after the 2xx"


async def read_stream(
    base_url: str, headers: dict[str, str], wanted: int, into: list[tuple[str, dict[str, Any]]]
) -> None:
    """Append (id, recording) of `recording` events until `wanted` of them arrived."""
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
        client.stream("GET", "/v1/changes/stream", headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in events(response):
            if event.get("event") == "recording":
                into.append((event["id"], orjson.loads(event["data"])))
                if len(into) >= wanted:
                    return


async def events(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


async def test_the_stream_resumes_from_last_event_id_and_loses_nothing(
    shared_database_url: str, signer: Signer, servers: list[ServerProcess]
) -> None:
    server = await start(servers, shared_database_url, signer)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        for n in range(3):
            await deliver(client, signer, track_webhook("started", session_id=f"before-{n}"))
        received: list[tuple[str, dict[str, Any]]] = []
        await asyncio.wait_for(read_stream(server.base_url, {}, 2, received), 20)
        # Dropped after two events; three more changes while nobody listens.
        for n in range(3):
            await deliver(client, signer, track_webhook("started", session_id=f"after-{n}"))
        await asyncio.wait_for(
            read_stream(server.base_url, {"Last-Event-ID": received[-1][0]}, 6, received), 20
        )
    sessions = [recording["sessionId"] for _, recording in received]
    assert sessions == [f"before-{n}" for n in range(3)] + [f"after-{n}" for n in range(3)]
    assert len({event_id for event_id, _ in received}) == 6


async def test_a_lost_listening_connection_is_reestablished(
    shared_database_url: str, signer: Signer, servers: list[ServerProcess]
) -> None:
    waiting_on, receiving = await asyncio.gather(
        start(servers, shared_database_url, signer), start(servers, shared_database_url, signer)
    )
    admin = await asyncpg.connect(asyncpg_dsn(shared_database_url), timeout=10)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'trackhook-listen'"
        )
    finally:
        await admin.close()
    assert killed == 2  # one listening connection per process
    async with (
        httpx.AsyncClient(base_url=waiting_on.base_url, timeout=30) as follower,
        httpx.AsyncClient(base_url=receiving.base_url, timeout=30) as sender,
    ):
        cursor = (await follower.get("/v1/changes", params={"cursor": "now"})).json()["nextCursor"]
        waiting = asyncio.create_task(
            follower.get(
                "/v1/changes", params={"cursor": cursor, "sessionId": "relisten", "wait": 20}
            )
        )
        await asyncio.sleep(1.0)  # the listeners reconnect within 0.1 s
        sent = time.monotonic()
        await deliver(sender, signer, track_webhook("started", session_id="relisten"))
        answered = await asyncio.wait_for(waiting, 20)
        assert [item["sessionId"] for item in answered.json()["items"]] == ["relisten"]
        assert time.monotonic() - sent < WAKE_WITHIN_SECONDS


async def test_streams_end_cleanly_when_the_server_shuts_down(
    shared_database_url: str, signer: Signer, servers: list[ServerProcess]
) -> None:
    server = await start(servers, shared_database_url, signer)
    ended = asyncio.Event()

    async def follow() -> None:
        async with (
            httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
            client.stream("GET", "/v1/changes/stream", params={"cursor": "now"}) as response,
        ):
            async for _event in events(response):
                pass
        ended.set()

    following = asyncio.create_task(follow())
    await asyncio.sleep(0.5)
    assert server.process is not None
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(following, 15)  # the stream ended: no read error, no hang
    assert ended.is_set()
    code = await asyncio.to_thread(server.process.wait, 15)
    assert code in (0, -signal.SIGTERM)
    assert time.monotonic() - signalled < 10


async def test_the_stream_needs_a_token_when_tokens_are_set(
    shared_database_url: str, signer: Signer, servers: list[ServerProcess]
) -> None:
    server = ServerProcess(env=server_env(shared_database_url, signer, API_TOKENS="t1"), workers=1)
    servers.append(server)
    await asyncio.to_thread(server.start)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        refused = await client.get("/v1/changes/stream")
        assert refused.status_code == 401 and refused.json()["error"] == "missing_token"
        async with client.stream(
            "GET", "/v1/changes/stream", headers={"Authorization": "Bearer t1"}
        ) as granted:
            assert granted.status_code == 200
            assert granted.headers["content-type"].startswith("text/event-stream")
