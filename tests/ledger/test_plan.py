"""The write plan (pure): a track's burst planned group by group is the lifecycle fold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from app.ledger.plan import BaseWrite, Delivery, Target, TrackPlan, plan_track
from app.ledger.rows import EarlierRun, StoredRun
from app.rules.lifecycle import Outcome, RecordingState, Status, TrackEvent, TrackKey, fold
from app.videosdk.documents import EventIdentity

KEY = TrackKey("session", "participant", "audio")
T0 = datetime(2026, 11, 30, tzinfo=UTC)


def delivery(index: int, status: Status, fingerprint: str, files: int) -> Delivery:
    event = TrackEvent(
        status,
        fingerprint,
        T0 + timedelta(seconds=index),
        tuple({"filePath": f"/f/{n}", "fileUrl": f"https://f/{n}"} for n in range(files)),
        meeting_id=f"meeting-{index}",
    )
    return Delivery(
        received_at=event.received_at,
        webhook_type=f"participant-track-recording-{status.value}",
        identity=EventIdentity(),
        fingerprint=fingerprint,
        payload={},
        track=KEY,
        event=event,
    )


bursts = st.lists(
    st.tuples(st.sampled_from(list(Status)), st.sampled_from("abcd"), st.integers(0, 2)),
    min_size=1,
    max_size=12,
).map(
    lambda steps: [
        delivery(i, status, f"{status.value}-{fp}", files)
        for i, (status, fp, files) in enumerate(steps)
    ]
)


def apply(plan: TrackPlan, runs: list[RecordingState], ids: list[int]) -> StoredRun:
    """What the writers do with a plan, on an in-memory table; returns the new latest, as
    a writer reads it (with the earlier runs)."""
    if plan.base is not None and plan.base_write is BaseWrite.UPDATE:
        assert plan.base_state is not None
        runs[-1] = plan.base_state
    if plan.opened is not None:
        runs.append(plan.opened)
        ids.append(len(ids) + 1)
    earlier = tuple(
        EarlierRun(run_id, run.sequence, run.fingerprints)
        for run_id, run in zip(ids[:-1], runs[:-1], strict=True)
    )
    return StoredRun(ids[-1], 1, KEY, runs[-1], earlier)


@given(bursts, st.integers(1, 12))
def test_a_burst_planned_group_by_group_is_the_fold(
    deliveries: list[Delivery], group_size: int
) -> None:
    runs: list[RecordingState] = []
    ids: list[int] = []
    outcomes = []
    base: StoredRun | None = None
    pending = list(deliveries)
    while pending:
        plan = plan_track(KEY, base, pending[:group_size])
        assert plan.events, "a plan always takes its first delivery"
        outcomes += [event.outcome for event in plan.events]
        # Events go to the base until the plan opens a run, to that run from then on; a
        # retry of an earlier run's delivery goes to that run.
        targets = [e.target for e in plan.events if e.outcome is not Outcome.DUPLICATE]
        opened_at = targets.index(Target.OPENED) if plan.opened else len(targets)
        assert set(targets[:opened_at]) <= {Target.BASE}
        assert set(targets[opened_at:]) <= {Target.OPENED}
        base = apply(plan, runs, ids)
        pending = [*plan.deferred, *pending[group_size:]]
    expected = fold(d.event for d in deliveries if d.event is not None)
    assert tuple(runs) == expected.recordings
    assert tuple(outcomes) == expected.outcomes


def test_a_plan_opens_at_most_one_run_and_defers_the_rest_in_order() -> None:
    steps = [
        (Status.STARTING, "a"),
        (Status.STOPPED, "b"),
        (Status.STARTING, "c"),
        (Status.STOPPED, "d"),
    ]
    deliveries = [delivery(i, status, fp, 0) for i, (status, fp) in enumerate(steps)]
    plan = plan_track(KEY, None, deliveries)
    assert [event.delivery for event in plan.events] == deliveries[:2]
    assert plan.deferred == tuple(deliveries[2:])
    assert plan.opened is not None and plan.opened.status is Status.STOPPED
    assert plan.base_write is None


def test_a_next_run_inherits_the_meeting_id_and_supersedes_the_base() -> None:
    first = plan_track(KEY, None, [delivery(0, Status.STARTING, "a", 0)])
    assert first.opened is not None and first.opened.meeting_id == "meeting-0"
    stopped = plan_track(
        KEY, StoredRun(1, 1, KEY, first.opened), [delivery(1, Status.STOPPED, "b", 1)]
    )
    assert stopped.base_write is BaseWrite.UPDATE and stopped.base_is_latest
    assert stopped.base_state is not None
    restart = plan_track(
        KEY, StoredRun(1, 2, KEY, stopped.base_state), [delivery(2, Status.STARTING, "c", 0)]
    )
    assert restart.base_write is BaseWrite.SUPERSEDE
    assert restart.opened is not None
    assert (restart.opened.sequence, restart.opened.meeting_id) == (2, "meeting-0")


def test_a_duplicate_holds_the_base_unchanged() -> None:
    opened = plan_track(KEY, None, [delivery(0, Status.STARTED, "a", 0)]).opened
    assert opened is not None
    again = plan_track(KEY, StoredRun(1, 1, KEY, opened), [delivery(1, Status.STARTED, "a", 0)])
    assert again.base_write is BaseWrite.HOLD
    assert [event.outcome.value for event in again.events] == ["duplicate"]
    assert again.events[0].after is None
