"""Convergence: whatever the history and the delivery order, the stored recordings are the
pure fold (app.rules.lifecycle) of the events in the order the service applied them.

(a) one delivery at a time through the HTTP API, on both backends: the reference is the
fold of the sending order; (b) four concurrent senders against two uvicorn workers on
PostgreSQL: the reference is the fold of the event log in id order, plus the sending
order's fold for histories whose result cannot depend on order.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.ledger.engine import create_engine
from app.ledger.migrations import upgrade_to_head
from app.ledger.rebuild import rebuild
from app.rules.lifecycle import FoldResult, RecordingState, Status, TrackEvent, fold
from app.videosdk.documents import fingerprint_of
from app.videosdk.schemas import TRACK_WEBHOOK_TYPES
from tests.conftest import reachable_postgres_admin
from tests.property.strategies import (
    CLIENTS,
    Delivery,
    History,
    KeyTuple,
    fold_with_sequences,
    histories,
    sessions_of,
)
from tests.support import databases
from tests.support.client import WebhookClient
from tests.support.server import ServerProcess
from tests.support.signing import Signer

SEQUENTIAL_EXAMPLES = 40
CONCURRENT_EXAMPLES = 15
MAX_ATTEMPTS = 50  # a sender retries a 503 (nothing committed) like VideoSDK would
STAMPS = {status: f"{status.value}At" for status in Status}

FIGURES: Counter[str] = Counter()
_runs = itertools.count()


def unique_prefix() -> str:
    """Fresh ids per example, so examples share a database without seeing each other."""
    return f"h{next(_runs)}{uuid.uuid4().hex[:6]}"


class _Figures:
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if FIGURES:
            figures = ", ".join(f"{name}={count}" for name, count in sorted(FIGURES.items()))
            terminalreporter.write_line(f"trackhook convergence: {figures}")


@pytest.fixture(scope="module", autouse=True)
def _report_figures(request: pytest.FixtureRequest) -> Iterator[None]:
    name = "trackhook-convergence-figures"
    if not request.config.pluginmanager.has_plugin(name):
        request.config.pluginmanager.register(_Figures(), name)
    yield


# --- reading the API ---------------------------------------------------------------------

Get = Callable[..., Awaitable[httpx.Response]]


async def all_pages(get: Get, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item, walking the cursors (small pages, so the walk itself is exercised)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": 7, **({"cursor": cursor} if cursor else {})}
        response = await get(path, **query)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["nextCursor"]
        if cursor is None:
            return items


async def read_state(
    get: Get, sessions: Sequence[str]
) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]]]:
    """The log rows by id and the stored recordings of the given sessions."""
    log: dict[int, dict[str, Any]] = {}
    stored: list[dict[str, Any]] = []
    for session in sessions:
        for row in await all_pages(get, "/v1/webhook-events", sessionId=session):
            log[int(row["id"])] = row
        stored += await all_pages(get, "/v1/recordings", sessionId=session)
    return log, stored


def moment(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


# --- the reference -------------------------------------------------------------------------


@dataclass
class Expected:
    folds: dict[KeyTuple, FoldResult]
    meeting: dict[KeyTuple, str]


def expected_view(state: RecordingState) -> dict[str, Any]:
    view: dict[str, Any] = {
        "sequence": state.sequence,
        "status": state.status.value,
        "files": [dict(entry) for entry in state.files],
        "createdAt": state.created_at,
        "updatedAt": state.updated_at,
    }
    view.update({name: state.received.get(status) for status, name in STAMPS.items()})
    return view


def stored_view(item: dict[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {
        "sequence": item["sequence"],
        "status": item["status"],
        "files": item["files"],
        "createdAt": moment(item["createdAt"]),
        "updatedAt": moment(item["updatedAt"]),
    }
    view.update({name: moment(item[name]) for name in STAMPS.values()})
    return view


def key_of(item: dict[str, Any]) -> KeyTuple:
    return (item["sessionId"], item["participantId"], item["kind"])


def recording_ids(stored: list[dict[str, Any]]) -> dict[tuple[KeyTuple, int], int]:
    return {(key_of(item), item["sequence"]): int(item["id"]) for item in stored}


def assert_recordings_equal(stored: list[dict[str, Any]], expected: Expected) -> None:
    actual: dict[KeyTuple, list[dict[str, Any]]] = defaultdict(list)
    for item in sorted(stored, key=lambda item: (key_of(item), item["sequence"])):
        actual[key_of(item)].append(stored_view(item))
        assert item["meetingId"] == expected.meeting[key_of(item)]
    wanted = {
        key: [expected_view(state) for state in result.recordings]
        for key, result in expected.folds.items()
    }
    assert dict(actual) == wanted


# --- (a) one at a time ---------------------------------------------------------------------


@settings(
    max_examples=SEQUENTIAL_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories())
async def test_sequential_delivery_converges_to_the_fold(
    client: WebhookClient, backend: str, history: History
) -> None:
    deliveries = history.deliveries(unique_prefix())
    answers = [await client.deliver(delivery.payload) for delivery in deliveries]
    log, stored = await read_state(client.get, sessions_of(deliveries))

    # The reference: each key's events in sending order, stamped with the log's receive time.
    events: dict[KeyTuple, list[TrackEvent]] = defaultdict(list)
    meeting: dict[KeyTuple, str] = {}
    for delivery, answer in zip(deliveries, answers, strict=True):
        row = log[int(answer["eventId"])]
        assert row["payload"] == delivery.payload
        assert row["outcome"] == answer["status"]
        if delivery.key is None:
            assert (answer["status"], answer["recordingId"]) == ("ignored", None)
            continue
        events[delivery.key].append(delivery.event(datetime.fromisoformat(row["receivedAt"])))
        meeting.setdefault(delivery.key, delivery.payload["data"]["meetingId"])
    assert len(log) == len(deliveries)  # one log row per delivery, no more

    folds: dict[KeyTuple, FoldResult] = {}
    touched: dict[KeyTuple, list[int]] = {}
    for key, key_events in events.items():
        folds[key], touched[key] = fold_with_sequences(key_events)
    assert_recordings_equal(stored, Expected(folds, meeting))

    # Each answer's outcome and recording are the fold's.
    ids = recording_ids(stored)
    position: Counter[KeyTuple] = Counter()
    for delivery, answer in zip(deliveries, answers, strict=True):
        if delivery.key is None:
            continue
        index = position[delivery.key]
        position[delivery.key] += 1
        assert answer["status"] == folds[delivery.key].outcomes[index].value
        assert int(answer["recordingId"]) == ids[(delivery.key, touched[delivery.key][index])]

    FIGURES[f"sequential_{backend}_histories"] += 1
    FIGURES[f"sequential_{backend}_events"] += len(deliveries)
    FIGURES[f"sequential_{backend}_restarted_keys"] += sum(
        len(result.recordings) > 1 for result in folds.values()
    )
    FIGURES[f"sequential_{backend}_duplicates"] += sum(a["status"] == "duplicate" for a in answers)


# --- (b) concurrently, two workers ---------------------------------------------------------


@dataclass
class LiveServer:
    process: ServerProcess
    engine: AsyncEngine


@pytest.fixture(scope="module")
async def live_server(
    signer: Signer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveServer]:
    admin = await reachable_postgres_admin()
    url = await databases.create_postgres_database(admin)
    engine: AsyncEngine | None = None
    process = ServerProcess(
        env={
            "DATABASE_URL": url,
            "VIDEOSDK_PUBLIC_KEY": signer.public_pem,
            "WEBHOOK_SIGNATURE": "required",
            "API_TOKENS": "",
            "API_AUTH": "off",
            "LOG_LEVEL": "WARNING",
        },
        workers=2,
        log_path=tmp_path_factory.mktemp("convergence") / "server.log",
    )
    try:
        await asyncio.to_thread(upgrade_to_head, url)
        await asyncio.to_thread(process.start)
        engine = create_engine(Settings(database_url=url))
        yield LiveServer(process, engine)
    finally:
        await asyncio.to_thread(process.stop)
        if engine is not None:
            await engine.dispose()
        await databases.drop_postgres_database(admin, url)


async def send_concurrently(
    base_url: str, signer: Signer, deliveries: Sequence[Delivery]
) -> tuple[list[dict[str, Any]], int, int]:
    """Each of CLIENTS senders (its own connections) posts its share in order, all at once.

    Returns the answers in delivery order, the 503 retries, and how many deliveries were
    sent while another one for the same key was in flight."""
    bodies = [orjson.dumps(delivery.payload) for delivery in deliveries]
    signatures = [signer.sign(body) for body in bodies]
    answers: list[dict[str, Any] | None] = [None] * len(deliveries)
    in_flight: Counter[KeyTuple | None] = Counter()
    overlapped = 0
    retries = 0

    async def sender(number: int) -> None:
        nonlocal overlapped, retries
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            for index, delivery in enumerate(deliveries):
                if delivery.client != number:
                    continue
                headers = {
                    "content-type": "application/json",
                    "videosdk-signature": signatures[index],
                }
                overlapped += delivery.key is not None and in_flight[delivery.key] > 0
                in_flight[delivery.key] += 1
                try:
                    for _attempt in range(MAX_ATTEMPTS):
                        response = await http.post(
                            "/webhooks/videosdk", content=bodies[index], headers=headers
                        )
                        if response.status_code != 503:
                            break
                        retries += 1
                        await asyncio.sleep(0.01)
                finally:
                    in_flight[delivery.key] -= 1
                assert response.status_code == 200, response.text
                answers[index] = response.json()

    await asyncio.gather(*(sender(number) for number in range(CLIENTS)))
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None], retries, overlapped


def log_event(row: dict[str, Any]) -> tuple[KeyTuple, TrackEvent]:
    """The fold's view of a log row, read straight from its stored payload."""
    data = row["payload"]["data"]
    files = tuple(dict(entry) for entry in data.get("fileDetails") or ())
    status = TRACK_WEBHOOK_TYPES[row["webhookType"]]
    received_at = datetime.fromisoformat(row["receivedAt"])
    event = TrackEvent(status, fingerprint_of(row["payload"]), received_at, files)
    return (data["sessionId"], data["participantId"], data["kind"]), event


def check_against_the_log(
    deliveries: Sequence[Delivery],
    answers: Sequence[dict[str, Any]],
    log: dict[int, dict[str, Any]],
    stored: list[dict[str, Any]],
) -> dict[KeyTuple, FoldResult]:
    """Whatever order the deliveries were applied in: nothing lost or applied twice, and the
    recordings, each event's outcome and link are the fold of each key's log in id order."""
    # Nothing lost, nothing applied twice: the log holds exactly what was sent.
    assert sorted(int(answer["eventId"]) for answer in answers) == sorted(log)
    for delivery, answer in zip(deliveries, answers, strict=True):
        row = log[int(answer["eventId"])]
        assert row["payload"] == delivery.payload
        assert row["outcome"] == answer["status"]
    sent = Counter(delivery.fingerprint for delivery in deliveries if delivery.key is not None)
    kept = Counter(
        fingerprint_of(row["payload"])
        for row in log.values()
        if row["outcome"] in ("applied", "duplicate")
    )
    assert kept == sent
    strays = Counter(delivery.fingerprint for delivery in deliveries if delivery.key is None)
    ignored = Counter(
        fingerprint_of(row["payload"]) for row in log.values() if row["outcome"] == "ignored"
    )
    assert ignored == strays

    # The reference: each key's logged events in id order (the order they were applied).
    events: dict[KeyTuple, list[TrackEvent]] = defaultdict(list)
    rows: dict[KeyTuple, list[dict[str, Any]]] = defaultdict(list)
    meeting: dict[KeyTuple, str] = {}
    for event_id in sorted(log):
        row = log[event_id]
        if row["outcome"] not in ("applied", "duplicate"):
            continue
        key, event = log_event(row)
        events[key].append(event)
        rows[key].append(row)
        meeting.setdefault(key, row["payload"]["data"]["meetingId"])
    folds: dict[KeyTuple, FoldResult] = {}
    ids = recording_ids(stored)
    for key, key_events in events.items():
        folds[key], touched = fold_with_sequences(key_events)
        for row, outcome, sequence in zip(rows[key], folds[key].outcomes, touched, strict=True):
            assert row["outcome"] == outcome.value, row
            assert int(row["recordingId"]) == ids[(key, sequence)], row
    assert_recordings_equal(stored, Expected(folds, meeting))
    # Each recording's version is the number of events applied to it, whichever path wrote it.
    applied = Counter(row["recordingId"] for row in log.values() if row["outcome"] == "applied")
    assert {item["id"]: item["version"] for item in stored} == {
        item["id"]: applied[item["id"]] for item in stored
    }
    return folds


@settings(
    max_examples=CONCURRENT_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories())
async def test_concurrent_delivery_to_two_workers_converges_to_the_fold_of_the_log(
    live_server: LiveServer, signer: Signer, history: History
) -> None:
    prefix = unique_prefix()
    deliveries = history.deliveries(prefix)
    answers, retries, overlapped = await send_concurrently(
        live_server.process.base_url, signer, deliveries
    )
    async with httpx.AsyncClient(base_url=live_server.process.base_url, timeout=30) as http:

        async def get(path: str, **params: Any) -> httpx.Response:
            return await http.get(path, params=params)

        log, stored = await read_state(get, sessions_of(deliveries))

    folds = check_against_the_log(deliveries, answers, log, stored)

    # Where order cannot matter, the result is also the fold of the sending order.
    for key in history.order_free_keys(prefix):
        sent_order = [
            delivery.event(datetime.min) for delivery in deliveries if delivery.key == key
        ]
        reference = fold(sent_order).recordings
        result = folds[key].recordings
        assert len(result) == len(reference) == 1
        assert result[0].status is reference[0].status
        assert {f["filePath"] for f in result[0].files} == {
            f["filePath"] for f in reference[0].files
        }
        FIGURES["concurrent_order_free_keys"] += 1

    # And a rebuild of the whole database (every example so far) finds nothing to fix.
    report = await rebuild(live_server.engine, repair=False)
    assert report.differences == [], report.lines()

    FIGURES["concurrent_histories"] += 1
    FIGURES["concurrent_events"] += len(deliveries)
    FIGURES["concurrent_same_key_overlaps"] += overlapped
    FIGURES["concurrent_503_retries"] += retries
    FIGURES["concurrent_restarted_keys"] += sum(
        len(result.recordings) > 1 for result in folds.values()
    )
    FIGURES["concurrent_rebuild_events_last"] = report.events_read


# --- (c) bursts: a whole history at once, into one process ----------------------------------

BURST_EXAMPLES = 25


async def shared_commits(database_url: str, event_ids: Sequence[int]) -> int:
    """How many of these log rows were committed by the same transaction as another row
    of the same track (PostgreSQL's xmin)."""
    connection = await asyncpg.connect(databases.asyncpg_dsn(database_url), timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT session_id, participant_id, kind, xmin::text AS txn FROM webhook_events "
            "WHERE id = ANY($1::bigint[]) AND session_id IS NOT NULL",
            list(event_ids),
        )
    finally:
        await connection.close()
    together = Counter(
        (row["session_id"], row["participant_id"], row["kind"], row["txn"]) for row in rows
    )
    return sum(count for count in together.values() if count > 1)


@settings(
    max_examples=BURST_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories())
async def test_a_history_delivered_all_at_once_converges_to_the_fold_of_the_log(
    client: WebhookClient, backend: str, database_url: str, history: History
) -> None:
    """Every delivery of the history is in flight at once, so on PostgreSQL a track's
    deliveries meet in one group and are folded together in memory before one write."""
    deliveries = history.deliveries(unique_prefix())
    responses = await asyncio.gather(*(client.post(delivery.payload) for delivery in deliveries))
    assert [r.status_code for r in responses] == [200] * len(deliveries), [
        r.text for r in responses if r.status_code != 200
    ]
    answers = [response.json() for response in responses]
    log, stored = await read_state(client.get, sessions_of(deliveries))
    folds = check_against_the_log(deliveries, answers, log, stored)

    engine = create_engine(Settings(database_url=database_url))
    try:
        report = await rebuild(engine, repair=False)
    finally:
        await engine.dispose()
    assert report.differences == [], report.lines()

    if backend == "postgresql":
        FIGURES["bursts_shared_commits"] += await shared_commits(
            database_url, [int(answer["eventId"]) for answer in answers]
        )
    FIGURES[f"bursts_{backend}_histories"] += 1
    FIGURES[f"bursts_{backend}_events"] += len(deliveries)
    FIGURES[f"bursts_{backend}_restarted_keys"] += sum(
        len(result.recordings) > 1 for result in folds.values()
    )
