"""Retention (`trackhook prune`): what goes, what stays, and that rebuild, its repair and
intake see the pruned log exactly as they saw the whole one."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.ledger.engine import create_engine
from app.ledger.prune import PruneReport, prune
from app.ledger.rebuild import RebuildReport, rebuild
from app.ledger.rows import STATE_COLUMNS
from app.ledger.tables import BASELINES, EVENTS, RECORDINGS
from app.rules.lifecycle import TrackFold
from tests.property.strategies import History, histories
from tests.support.aging import move_back
from tests.support.client import WebhookClient
from tests.support.payloads import file_entry, track_webhook

HYPOTHESIS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_runs = itertools.count()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(database_url=database_url))
    yield engine
    await engine.dispose()


def soon() -> datetime:
    """A cutoff after everything delivered so far: all of it is old enough."""
    return datetime.now(UTC) + timedelta(seconds=1)


async def prune_all(engine: AsyncEngine, **options: Any) -> PruneReport:
    return await prune(engine, soon(), **options)


async def assert_rebuild_finds_nothing(engine: AsyncEngine) -> RebuildReport:
    report = await rebuild(engine, repair=False)
    assert report.differences == [], report.lines()
    return report


async def scalar(engine: AsyncEngine, statement: Any) -> Any:
    async with engine.connect() as connection:
        return (await connection.execute(statement)).scalar_one()


async def event_count(engine: AsyncEngine, **where: Any) -> int:
    statement = select(func.count()).select_from(EVENTS)
    for column, value in where.items():
        statement = statement.where(EVENTS.c[column] == value)
    return int(await scalar(engine, statement))


async def recordings(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(RECORDINGS).order_by(RECORDINGS.c.id))
        return [dict(row) for row in rows.mappings()]


def unique_session(name: str = "s") -> str:
    return f"{name}-{next(_runs)}-{uuid.uuid4().hex[:8]}"


async def finished_recording(client: WebhookClient, session: str, **ids: Any) -> int:
    await client.deliver(track_webhook("starting", session_id=session, **ids))
    await client.deliver(track_webhook("started", session_id=session, **ids))
    answer = await client.deliver(
        track_webhook("stopped", session_id=session, files=[file_entry(session)], **ids)
    )
    return int(answer["recordingId"])


async def test_a_pruned_recording_survives_rebuild_and_its_repair(
    client: WebhookClient, engine: AsyncEngine
) -> None:
    """Failed first, with the events deleted in SQL: rebuild found the recording explained
    by no event and --repair deleted it."""
    finished = await finished_recording(client, unique_session("old"))
    running_session = unique_session("running")
    answer = await client.deliver(track_webhook("started", session_id=running_session))
    running = int(answer["recordingId"])
    await client.deliver({"webhookType": "session-started", "data": {"sessionId": "x"}})
    rejected = await client.post(track_webhook("started", session_id=""))
    assert rejected.status_code == 422
    before = await recordings(engine)

    report = await prune_all(engine)

    assert (report.ignored, report.rejected, report.events) == (1, 1, 3), report.lines()
    assert (report.recordings, report.tracks, report.differing) == (1, 1, 0)
    assert await event_count(engine, recording_id=finished) == 0
    assert await event_count(engine, recording_id=running) == 1
    assert await event_count(engine) == 1
    rebuilt = await assert_rebuild_finds_nothing(engine)
    assert rebuilt.baselines == 1
    assert "baselines of pruned recordings: 1" in rebuilt.lines()
    repaired = await rebuild(engine, repair=True)
    assert repaired.differences == [] and not repaired.repaired
    assert await recordings(engine) == before
    document = (await client.get(f"/v1/recordings/{finished}")).json()
    assert document["status"] == "stopped" and document["events"] == []


async def test_a_pruned_recording_cannot_be_deleted(
    client: WebhookClient, engine: AsyncEngine
) -> None:
    """What a rebuild that knows nothing of baselines (before migration 0006) would do."""
    finished = await finished_recording(client, unique_session())
    await prune_all(engine)

    with pytest.raises(Exception, match="(?i)foreign key"):
        async with engine.begin() as connection:
            await connection.execute(RECORDINGS.delete().where(RECORDINGS.c.id == finished))
    assert [row["id"] for row in await recordings(engine)] == [finished]


async def test_later_deliveries_for_a_pruned_track_are_handled_as_before(
    client: WebhookClient, engine: AsyncEngine
) -> None:
    """A retry of a removed delivery, a late event of the finished run, a new run, then a
    second prune, which moves the baseline on."""
    session = unique_session()
    files = [file_entry(session)]
    stopped = track_webhook("stopped", session_id=session, files=files)
    await client.deliver(track_webhook("starting", session_id=session))
    first = await client.deliver(stopped)
    await prune_all(engine)
    assert await event_count(engine) == 0

    retry = await client.deliver(stopped)
    late = await client.deliver(track_webhook("stopping", session_id=session))
    retry_of_start = await client.deliver(track_webhook("starting", session_id=session))

    assert (retry["status"], retry["recordingId"]) == ("duplicate", first["recordingId"])
    assert (late["status"], late["recordingId"]) == ("applied", first["recordingId"])
    # The restart rule: a -starting the finished run already had opens the next run.
    assert retry_of_start["status"] == "applied"
    assert retry_of_start["recordingId"] != first["recordingId"]
    await assert_rebuild_finds_nothing(engine)
    retry_again = await client.deliver(stopped)  # the first run's, from the second run on
    assert (retry_again["status"], retry_again["recordingId"]) == (
        "duplicate",
        first["recordingId"],
    )
    await assert_rebuild_finds_nothing(engine)

    second = await prune_all(engine)
    # The first run's three new events go; the second run is still open, its event stays.
    assert (second.events, second.recordings) == (3, 1), second.lines()
    async with engine.connect() as connection:
        baseline = (await connection.execute(select(BASELINES))).mappings().one()
    assert baseline["events_pruned"] == 5
    assert baseline["stopping_at"] is not None
    assert await event_count(engine) == 1
    await assert_rebuild_finds_nothing(engine)


async def test_what_stays(client: WebhookClient, engine: AsyncEngine) -> None:
    """Events received after the cutoff; a finished run's events once a later event for it
    (even a retry) arrived after the cutoff; open runs and every run after one."""
    quiet = unique_session("quiet")
    await finished_recording(client, quiet)
    cutoff = datetime.now(UTC)
    young = unique_session("young")
    await finished_recording(client, young)
    retried = unique_session("retried")
    await finished_recording(client, retried)
    restarted = unique_session("restarted")
    await finished_recording(client, restarted)
    await client.deliver(track_webhook("starting", session_id=restarted))  # run 2, open
    for session in (quiet, retried, restarted):  # all but `young` happened before the cutoff
        await move_back(engine, timedelta(hours=1), session)
    await client.deliver(
        track_webhook("stopped", session_id=retried, files=[file_entry(retried)])
    )  # a retry, after the cutoff

    report = await prune(engine, cutoff)

    # `quiet` goes; `restarted` loses its first run's three events, not its open run's.
    assert (report.events, report.recordings, report.tracks) == (6, 2, 2), report.lines()
    assert await event_count(engine, session_id=quiet) == 0
    assert await event_count(engine, session_id=young) == 3
    assert await event_count(engine, session_id=retried) == 4
    assert await event_count(engine, session_id=restarted) == 1
    await assert_rebuild_finds_nothing(engine)


async def test_a_track_that_differs_from_the_log_is_left_as_it_is(
    client: WebhookClient, engine: AsyncEngine
) -> None:
    damaged = await finished_recording(client, unique_session("damaged"))
    await finished_recording(client, unique_session("sound"))
    async with engine.begin() as connection:
        await connection.execute(
            update(RECORDINGS).where(RECORDINGS.c.id == damaged).values(status="failed")
        )
    found = await rebuild(engine, repair=False)

    report = await prune_all(engine)

    assert (report.events, report.tracks, report.differing) == (3, 1, 1), report.lines()
    assert await event_count(engine, recording_id=damaged) == 3
    assert (await rebuild(engine, repair=False)).differences == found.differences
    assert any("differ from the log: 1" in line for line in report.lines())


async def test_a_dry_run_changes_nothing_and_a_second_run_finds_nothing(
    client: WebhookClient, engine: AsyncEngine
) -> None:
    for _ in range(5):
        session = unique_session()
        await finished_recording(client, session, participant_id="a")
        await finished_recording(client, session, participant_id="b", kind="video")
        await client.deliver({"webhookType": "session-ended", "data": {"sessionId": session}})
    await client.deliver(track_webhook("started", session_id=unique_session()))
    events_before = await event_count(engine)
    rows_before = await recordings(engine)

    dry = await prune_all(engine, dry_run=True, batch_size=7)

    assert await event_count(engine) == events_before
    assert await recordings(engine) == rows_before
    assert await scalar(engine, select(func.count()).select_from(BASELINES)) == 0
    assert (dry.ignored, dry.events, dry.recordings, dry.tracks) == (5, 30, 10, 10)
    assert "dry run: nothing was changed" in dry.lines()
    assert any(
        line.startswith("events of finished recordings to remove: 30") for line in dry.lines()
    )

    real = await prune_all(engine, batch_size=7)
    assert (real.ignored, real.events, real.recordings, real.tracks) == (5, 30, 10, 10)
    assert await event_count(engine) == events_before - 35 == 1
    again = await prune_all(engine, batch_size=7)
    assert again.removed == again.recordings == 0, again.lines()
    await assert_rebuild_finds_nothing(engine)


class Stop(Exception):
    pass


async def test_a_prune_stopped_half_way_leaves_a_consistent_ledger_and_goes_on(
    client: WebhookClient, engine: AsyncEngine
) -> None:
    for _ in range(6):
        await finished_recording(client, unique_session())
    whole = await prune_all(engine, dry_run=True, batch_size=4)

    def stop(_report: PruneReport) -> None:
        raise Stop

    with pytest.raises(Stop):
        await prune_all(engine, batch_size=4, after_batch=stop)
    half = await event_count(engine)
    assert 0 < half < 18
    await assert_rebuild_finds_nothing(engine)
    rest = await prune_all(engine, batch_size=4)
    assert rest.events == half and whole.events == 18
    assert await event_count(engine) == 0
    await assert_rebuild_finds_nothing(engine)


@settings(HYPOTHESIS, max_examples=10)
@given(history=histories())
async def test_after_a_prune_every_delivery_is_answered_and_rebuilt_as_on_the_whole_log(
    client: WebhookClient, engine: AsyncEngine, history: History
) -> None:
    """Any history, pruned, then the whole history delivered again (a retry of every
    delivery, in another order): each answer is the fold's, and rebuild finds nothing."""
    prefix = f"h{next(_runs)}{uuid.uuid4().hex[:6]}"
    deliveries = history.deliveries(prefix)
    for delivery in deliveries:
        await client.deliver(delivery.payload)
    await prune_all(engine)
    await assert_rebuild_finds_nothing(engine)

    again = list(deliveries)
    random.Random(prefix).shuffle(again)
    answers = [await client.deliver(delivery.payload) for delivery in again]

    folds: dict[tuple[str, str, str], TrackFold] = {}
    stamp = datetime.now(UTC)
    for delivery in deliveries:
        if delivery.key is not None:
            folds.setdefault(delivery.key, TrackFold()).apply(delivery.event(stamp))
    expected = []
    for delivery in again:
        if delivery.key is None:
            expected.append("ignored")
        else:
            expected.append(folds[delivery.key].apply(delivery.event(stamp)).outcome.value)
    assert [answer["status"] for answer in answers] == expected
    await assert_rebuild_finds_nothing(engine)


async def test_prune_while_webhooks_for_the_same_tracks_arrive(
    client: WebhookClient, engine: AsyncEngine
) -> None:
    """Intake keeps writing to the tracks being pruned (late events of finished runs,
    retries of removed deliveries, new runs) while prunes run in small batches."""
    sessions = [unique_session("busy") for _ in range(12)]
    for session in sessions:
        await finished_recording(client, session)
    answers: Counter[str] = Counter()

    async def intake() -> None:
        rng = random.Random(7)
        for round_number in range(6):
            for session in rng.sample(sessions, len(sessions)):
                stopped = track_webhook("stopped", session_id=session, files=[file_entry(session)])
                for payload in (
                    stopped,  # a retry of a (maybe removed) delivery
                    track_webhook("stopping", session_id=session),  # late, or a retry
                    track_webhook("starting", session_id=session),  # a run, or a retry
                    track_webhook(
                        "stopped",
                        session_id=session,
                        files=[file_entry(f"{session}-{round_number}")],
                    ),
                ):
                    answers[(await client.deliver(payload))["status"]] += 1
                await asyncio.sleep(0)

    async def prunes() -> list[PruneReport]:
        reports = []
        while not sending.done():
            reports.append(await prune(engine, soon(), batch_size=5))
            await asyncio.sleep(0.01)
        return reports

    sending = asyncio.ensure_future(intake())
    reports = await prunes()
    await sending

    assert sum(answers.values()) == 6 * 12 * 4
    assert sum(report.events for report in reports) > 0, [r.lines() for r in reports]
    await assert_rebuild_finds_nothing(engine)
    final = await prune_all(engine)
    await assert_rebuild_finds_nothing(engine)
    repaired = await rebuild(engine, repair=True)
    assert not repaired.repaired
    assert final.differing == 0


def test_a_baseline_has_the_state_columns_of_a_recording() -> None:
    for name in STATE_COLUMNS:
        kept, recording = BASELINES.c[name], RECORDINGS.c[name]
        assert (repr(kept.type), kept.nullable) == (repr(recording.type), recording.nullable)
