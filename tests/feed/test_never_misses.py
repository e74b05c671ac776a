"""The change feed's guarantee, as a property: however writers in several processes
interleave and commit, a follower walking the feed with `wait` while they write ends with a
copy equal to the recordings table, and never sees a recording go back to an older state.

Some transactions are held open on purpose: the ledger's own locked writer, in the test's
process, writes a change (so its transaction is numbered) and keeps it uncommitted while
the server's workers commit later-numbered ones. A feed that trusted transaction numbers
as commit order would pass such a change and never serve it (checked: with the horizon
replaced by `max(change_txn) + 1`, this test fails)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.config import Settings
from app.intake.service import classify
from app.ledger.engine import create_engine
from app.ledger.locked_writer import LockedWriter
from app.ledger.migrations import upgrade_to_head
from app.ledger.seam import AfterCommit
from tests.conftest import reachable_postgres_admin
from tests.property.strategies import Delivery, History, histories, sessions_of
from tests.support import databases
from tests.support.client import WebhookClient
from tests.support.deliveries import server_env
from tests.support.payloads import file_entry, track_webhook
from tests.support.server import ServerProcess
from tests.support.signing import Signer

SENDERS = 4
FIGURES: Counter[str] = Counter()
_runs = itertools.count()

# Late changes: when (seconds after the writers start), how long the transaction stays open
# after writing, and which of the example's tracks it changes.
holds = st.lists(
    st.tuples(st.floats(0.0, 0.6), st.floats(0.05, 0.6), st.integers(0, 10_000)),
    min_size=1,
    max_size=3,
)
schedules = st.tuples(st.lists(histories(), min_size=2, max_size=4), holds)
Schedule = tuple[list[History], list[tuple[float, float, int]]]

Get = Callable[..., Awaitable[httpx.Response]]
Post = Callable[[Delivery], Awaitable[httpx.Response]]


def prefix() -> str:
    return f"f{next(_runs)}{uuid.uuid4().hex[:6]}"


class Follower:
    """Follows /v1/changes with `wait`, keeping the newest state of every recording."""

    def __init__(self, get: Get, cursor: str) -> None:
        self.get = get
        self.cursor = cursor
        self.copy: dict[str, dict[str, Any]] = {}
        self.pages = 0
        self.went_back: list[tuple[str, int, int]] = []

    async def page(self, wait: float) -> int:
        response = await self.get("/v1/changes", cursor=self.cursor, wait=wait, limit=50)
        assert response.status_code == 200, response.text
        body = response.json()
        self.cursor = body["nextCursor"]
        self.pages += 1
        for item in body["items"]:
            held = self.copy.get(item["id"])
            if held is not None and item["version"] < held["version"]:
                self.went_back.append((item["id"], held["version"], item["version"]))
            else:
                self.copy[item["id"]] = item
        return len(body["items"])

    async def follow_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.page(wait=0.5)

    async def catch_up(self, sentinel: str) -> None:
        """After the writers: read until the sentinel's change arrives. It committed after
        every write, so once the feed serves it, it has served everything before it (an
        empty page proves nothing: the feed may be held back by a transaction in flight
        anywhere in the cluster)."""
        while not any(item["sessionId"] == sentinel for item in self.copy.values()):
            await self.page(wait=2)
        self.copy = {k: v for k, v in self.copy.items() if v["sessionId"] != sentinel}


async def send_all(post: Post, deliveries: Sequence[Delivery]) -> None:
    async def sender(number: int) -> None:
        for delivery in deliveries:
            if delivery.client % SENDERS == number:
                for _attempt in range(50):
                    response = await post(delivery)
                    if response.status_code != 503:
                        break
                    await asyncio.sleep(0.05)
                assert response.status_code == 200, response.text

    await asyncio.gather(*(sender(n) for n in range(SENDERS)))


async def stored(get: Get, sessions: Sequence[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for session in sessions:
        response = await get("/v1/recordings", sessionId=session, limit=500)
        assert response.status_code == 200 and response.json()["nextCursor"] is None
        found.update({item["id"]: item for item in response.json()["items"]})
    return found


async def hold_a_late_change(database_url: str, delivery: Delivery, seconds: float) -> None:
    """Write `delivery` with the ledger's locked writer and keep the transaction open."""
    engine = create_engine(Settings(database_url=database_url))
    try:
        writer = LockedWriter(engine, AfterCommit())
        async with engine.begin() as connection:
            body = orjson.dumps(delivery.payload)
            await writer.write(connection, classify(delivery.payload, datetime.now(UTC), body))
            await asyncio.sleep(seconds)
    finally:
        await engine.dispose()


def late_change(deliveries: Sequence[Delivery], pick: int, number: int) -> Delivery:
    """A new event (a file of its own) for one of the example's tracks."""
    tracked = [d for d in deliveries if d.key is not None]
    data = tracked[pick % len(tracked)].payload["data"]
    payload = track_webhook(
        "stopping",
        session_id=data["sessionId"],
        participant_id=data["participantId"],
        kind=data["kind"],
        meeting_id=data["meetingId"],
        files=[file_entry(f"late-{uuid.uuid4().hex[:8]}-{number}")],
    )
    return Delivery(payload, None, None, (), "", 0)


def sentinel_delivery(session: str) -> Delivery:
    return Delivery(track_webhook("started", session_id=session), None, None, (), "", 0)


async def run_schedule(get: Get, post: Post, database_url: str, schedule: Schedule) -> None:
    stories, hold_plan = schedule
    deliveries = [d for history in stories for d in history.deliveries(prefix())]
    start = await get("/v1/changes", cursor="now")
    follower = Follower(get, start.json()["nextCursor"])
    stop = asyncio.Event()
    following = asyncio.create_task(follower.follow_until(stop))

    async def chaos() -> None:
        for number, (at, hold, pick) in enumerate(hold_plan):
            await asyncio.sleep(at)
            late = late_change(deliveries, pick, number)
            await hold_a_late_change(database_url, late, hold)

    await asyncio.gather(send_all(post, deliveries), chaos())
    stop.set()
    await following
    sentinel = f"sentinel-{uuid.uuid4().hex[:8]}"
    response = await post(sentinel_delivery(sentinel))
    assert response.status_code == 200, response.text
    await follower.catch_up(sentinel)

    expected = await stored(get, sessions_of(deliveries))
    assert follower.went_back == []
    assert follower.copy.keys() == expected.keys()
    assert follower.copy == expected
    FIGURES["examples"] += 1
    FIGURES["deliveries"] += len(deliveries)
    FIGURES["recordings"] += len(expected)
    FIGURES["follower_pages"] += follower.pages
    FIGURES["holds"] += len(hold_plan)


@pytest.fixture(scope="module")
async def live_server(
    signer: Signer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[ServerProcess, str]]:
    admin = await reachable_postgres_admin()
    url = await databases.create_postgres_database(admin)
    process = ServerProcess(
        env=server_env(url, signer),
        workers=2,
        log_path=tmp_path_factory.mktemp("feed") / "server.log",
    )
    try:
        await asyncio.to_thread(upgrade_to_head, url)
        await asyncio.to_thread(process.start)
        yield process, url
    finally:
        await asyncio.to_thread(process.stop)
        await databases.drop_postgres_database(admin, url)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(schedule=schedules)
async def test_a_follower_of_two_workers_misses_nothing(
    live_server: tuple[ServerProcess, str], signer: Signer, schedule: Schedule
) -> None:
    server, url = live_server
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:

        async def get(path: str, **params: Any) -> httpx.Response:
            return await http.get(path, params=params)

        async def post(delivery: Delivery) -> httpx.Response:
            body = orjson.dumps(delivery.payload)
            headers = {"content-type": "application/json", "videosdk-signature": signer.sign(body)}
            return await http.post("/webhooks/videosdk", content=body, headers=headers)

        await run_schedule(get, post, url, schedule)
    FIGURES["postgresql_examples"] += 1


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(schedule=schedules)
async def test_a_follower_in_process_misses_nothing(
    client: WebhookClient, backend: str, database_url: str, schedule: Schedule
) -> None:
    async def post(delivery: Delivery) -> httpx.Response:
        return await client.post(delivery.payload)

    await run_schedule(client.get, post, database_url, schedule)
    FIGURES[f"{backend}_in_process_examples"] += 1


def test_figures_line(capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\ntrackhook feed: {dict(sorted(FIGURES.items()))}")
