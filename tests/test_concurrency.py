"""Simultaneous deliveries through two app instances (two engines and pools on one database,
as two worker processes would be) give the same result as one at a time."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.conftest import ClientFactory
from tests.support.client import WebhookClient
from tests.support.payloads import file_entry, track_webhook

KEY: dict[str, Any] = {"session_id": "s-busy", "participant_id": "p-busy", "kind": "video"}


@pytest.fixture
async def workers(make_client: ClientFactory) -> list[WebhookClient]:
    # Small pools, so waiting for a connection is part of what is exercised; a generous
    # pool timeout, so a slow shared test machine cannot turn that wait into a 503.
    settings = {"db_pool_size": 4, "db_connect_timeout_seconds": 60}
    return [await make_client(**settings), await make_client(**settings)]


@pytest.fixture
async def sql(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()


async def post_all(
    workers: list[WebhookClient], payloads: list[dict[str, Any]]
) -> list[httpx.Response]:
    """Every payload at once, alternating between the two app instances."""
    sends = [
        worker.post(payload)
        for worker, payload in zip(itertools.cycle(workers), payloads, strict=False)
    ]
    return list(await asyncio.gather(*sends))


async def rows_of_key(sql: AsyncEngine, session_id: str) -> list[tuple[int, bool, str]]:
    async with sql.connect() as connection:
        result = await connection.execute(
            text(
                "SELECT sequence, is_latest, status FROM recordings "
                "WHERE session_id = :s ORDER BY sequence"
            ),
            {"s": session_id},
        )
        return [(row[0], bool(row[1]), row[2]) for row in result]


async def count_events(sql: AsyncEngine) -> Counter[str]:
    async with sql.connect() as connection:
        result = await connection.execute(text("SELECT outcome FROM webhook_events"))
        return Counter(row[0] for row in result)


def fingerprint(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)


async def test_one_key_many_simultaneous_deliveries(
    workers: list[WebhookClient], sql: AsyncEngine
) -> None:
    files = [file_entry(f"part-{i}") for i in range(6)]
    distinct = [
        track_webhook("starting", **KEY),
        track_webhook("started", **KEY),
        track_webhook("stopping", **KEY),
        track_webhook("stopped", **KEY, files=[files[0], files[1]]),
        track_webhook("stopped", **KEY, files=[files[1], files[2], files[3]]),
        track_webhook("stopped", **KEY, files=[files[4]]),
        track_webhook("stopped", **KEY, files=[files[5], files[0]]),
    ]
    # starting/started are sent once: a repeat after the stop would rightly open run 2.
    repeats = [distinct[2]] * 10 + [distinct[3]] * 15 + [distinct[5]] * 10 + [distinct[6]] * 8
    payloads = distinct + repeats
    random.Random(2).shuffle(payloads)
    assert len(payloads) == 50

    responses = await post_all(workers, payloads)

    assert [r.status_code for r in responses] == [200] * 50, [r.text for r in responses]
    answers = [r.json() for r in responses]
    assert len({answer["recordingId"] for answer in answers}) == 1
    assert len({answer["eventId"] for answer in answers}) == 50
    assert Counter(a["status"] for a in answers) == {"applied": 7, "duplicate": 43}
    # Each distinct delivery is applied exactly once, whichever copy won.
    applied = Counter(
        fingerprint(p) for p, a in zip(payloads, answers, strict=True) if a["status"] == "applied"
    )
    assert sorted(applied.values()) == [1] * 7
    assert set(applied) == {fingerprint(p) for p in distinct}

    assert await rows_of_key(sql, "s-busy") == [(1, True, "stopped")]
    assert await count_events(sql) == {"applied": 7, "duplicate": 43}
    recording = (await workers[0].get(f"/v1/recordings/{answers[0]['recordingId']}")).json()
    assert recording["status"] == "stopped"
    assert all(recording[f"{s}At"] for s in ("starting", "started", "stopping", "stopped"))
    assert sorted(entry["filePath"] for entry in recording["files"]) == sorted(
        entry["filePath"] for entry in files
    )
    assert len(recording["events"]) == 50
    assert sorted(e["eventId"] for e in recording["events"]) == sorted(
        a["eventId"] for a in answers
    )


async def test_first_events_for_many_keys_at_once(
    workers: list[WebhookClient], sql: AsyncEngine
) -> None:
    kinds = ("audio", "video", "screen_audio", "screen_video")
    keys: list[dict[str, Any]] = [
        {"session_id": f"s-{i}", "participant_id": f"p-{i % 3}", "kind": kinds[i % 4]}
        for i in range(20)
    ]
    # Every event of a key may be its first, so the "create the first recording" race is
    # run many times over. No key gets a second starting/started, so none may restart.
    payloads = []
    for key in keys:
        payloads += [track_webhook("starting", **key)]
        payloads += [track_webhook("stopping", **key)] * 2
        payloads += [track_webhook("stopped", **key, files=[file_entry(key["session_id"])])]
    random.Random(3).shuffle(payloads)

    responses = await post_all(workers, payloads)

    assert {r.status_code for r in responses} == {200}, [r.text for r in responses]
    answers = [r.json() for r in responses]
    assert Counter(a["status"] for a in answers) == {"applied": 60, "duplicate": 20}
    by_session: dict[str, set[str]] = {}
    for payload, answer in zip(payloads, answers, strict=True):
        by_session.setdefault(payload["data"]["sessionId"], set()).add(answer["recordingId"])
    assert all(len(ids) == 1 for ids in by_session.values()), by_session
    assert len(set().union(*by_session.values())) == 20
    for key in keys:
        assert await rows_of_key(sql, key["session_id"]) == [(1, True, "stopped")]
    listing = (await workers[1].get("/v1/recordings", limit=100)).json()["items"]
    assert sorted(item["sessionId"] for item in listing) == sorted(k["session_id"] for k in keys)
    for item in listing:
        assert [f["filePath"] for f in item["files"]] == [
            f"/encoded/videos/{item['sessionId']}.mp4"
        ]
        assert all(item[f"{s}At"] for s in ("starting", "stopping", "stopped"))
    assert sum((await count_events(sql)).values()) == len(payloads)


async def test_simultaneous_restarts(workers: list[WebhookClient], sql: AsyncEngine) -> None:
    for round_number in range(1, 4):
        for status in ("starting", "started", "stopping"):
            await workers[0].deliver(track_webhook(status, **KEY))
        await workers[1].deliver(
            track_webhook("stopped", **KEY, files=[file_entry(f"run-{round_number}")])
        )
        # The run is finished; now many copies of `starting` (and `started`) arrive at once.
        payloads = [track_webhook("starting", **KEY)] * 12 + [track_webhook("started", **KEY)] * 6
        random.Random(round_number).shuffle(payloads)

        responses = await post_all(workers, payloads)

        assert {r.status_code for r in responses} == {200}, [r.text for r in responses]
        answers = [r.json() for r in responses]
        opened = {a["recordingId"] for a in answers}
        assert len(opened) == 1, answers
        assert Counter(a["status"] for a in answers) == {"applied": 2, "duplicate": 16}
        rows = await rows_of_key(sql, KEY["session_id"])
        sequences = [row[0] for row in rows]
        assert sequences == list(range(1, round_number + 2)), rows
        assert [row[1] for row in rows] == [False] * round_number + [True], rows
        assert rows[-1][2] == "started"
        assert all(row[2] == "stopped" for row in rows[:-1])

    async with sql.connect() as connection:
        duplicates = (
            await connection.execute(
                text(
                    "SELECT count(*) FROM (SELECT sequence FROM recordings "
                    "GROUP BY session_id, participant_id, kind, sequence HAVING count(*) > 1) d"
                )
            )
        ).scalar_one()
        latest = (
            await connection.execute(
                text(
                    "SELECT count(*) FROM (SELECT session_id FROM recordings WHERE is_latest "
                    "GROUP BY session_id, participant_id, kind HAVING count(*) > 1) d"
                )
            )
        ).scalar_one()
    assert (duplicates, latest) == (0, 0)
