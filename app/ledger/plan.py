"""The write plan: what must be written for a track's latest recording and the deliveries
that arrived for it, decided by the lifecycle rules with no I/O.

Every writer consumes a plan: the group writer (many tracks in one statement on
PostgreSQL) and the locked writer (one delivery in one transaction, any database). A plan
may hold several deliveries of one track (a burst): they are folded in arrival order, so
the recording row is written once, with its final state, and every delivery gets its own
log row and outcome.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from app.ledger.rows import StoredRun
from app.rules.lifecycle import Outcome, RecordingState, TrackEvent, TrackKey, transition
from app.videosdk.documents import EventIdentity


@dataclass(frozen=True, slots=True)
class Delivery:
    """A verified delivery, as the ledger logs it, and applies it when it is a track event."""

    received_at: datetime
    webhook_type: str
    identity: EventIdentity
    fingerprint: str
    payload: Mapping[str, Any]
    body: bytes | None = None  # the bytes as received (the signature covers them)
    signature: str | None = None  # the videosdk-signature header as received
    track: TrackKey | None = None  # set, with `event`, for a valid track-recording webhook
    event: TrackEvent | None = None
    problems: Sequence[Mapping[str, str]] | None = None  # a rejected delivery's field errors

    @property
    def unapplied_outcome(self) -> Outcome:
        """What a delivery that is not a track event is logged as."""
        return Outcome.REJECTED if self.problems is not None else Outcome.IGNORED


class Target(StrEnum):
    """The recording a log row points at."""

    NONE = "none"  # ignored and rejected deliveries
    BASE = "base"  # the latest recording the plan started from
    OPENED = "opened"  # the recording the plan opens
    EARLIER = "earlier"  # an earlier run of the track (a retry of one of its deliveries)


class BaseWrite(StrEnum):
    """What happens to the latest recording the plan started from."""

    HOLD = "hold"  # unchanged: lock it, and only if its version is still the one read
    UPDATE = "update"  # its new state (and whether it stays the latest)
    SUPERSEDE = "supersede"  # unchanged, but no longer the latest: a run was opened


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    """One log row, with the change it made (for the seam after commit)."""

    delivery: Delivery
    outcome: Outcome
    target: Target
    before: RecordingState | None = None  # the target's state before an applied event
    after: RecordingState | None = None  # and after it
    earlier_id: int | None = None  # the recording, when the target is an earlier run


@dataclass(frozen=True, slots=True)
class TrackPlan:
    key: TrackKey
    base: StoredRun | None
    base_write: BaseWrite | None  # None when the track had no recording
    base_state: RecordingState | None  # the base recording's state after the plan
    opened: RecordingState | None  # the run the plan opens, written as the latest
    events: tuple[PlannedEvent, ...]
    # Deliveries the plan cannot hold: a second run opened by one plan is left to the next
    # write, with every delivery after it (arrival order is apply order).
    deferred: tuple[Delivery, ...] = ()

    @property
    def base_is_latest(self) -> bool:
        return self.opened is None

    def applied_to(self, target: Target) -> int:
        """How many of the plan's events change `target`: its version grows by as many."""
        return sum(
            1
            for event in self.events
            if event.target is target and event.outcome is Outcome.APPLIED
        )


def plan_track(
    key: TrackKey,
    base: StoredRun | None,
    deliveries: Sequence[Delivery],
    max_files: int | None = None,
) -> TrackPlan:
    """Fold `deliveries` (all of track `key`, in arrival order) onto its latest recording.
    A delivery that would leave a recording with more than `max_files` files is rejected
    (logged, answered 422) and changes nothing."""
    latest = base.state if base is not None else None
    base_state = latest
    earlier = base.earlier_fingerprints if base is not None else {}
    opened: RecordingState | None = None
    events: list[PlannedEvent] = []
    for index, delivery in enumerate(deliveries):
        assert delivery.track == key and delivery.event is not None
        step = transition(latest, delivery.event, earlier)
        if _too_many_files(step.recording, latest, max_files):
            assert max_files is not None
            events.append(_rejected(delivery, max_files))
            continue
        if step.opened:
            if opened is not None:
                return _finish(key, base, base_state, opened, events, deliveries[index:])
            if base_state is not None:  # the base is an earlier run from here on
                earlier = {**earlier, **dict.fromkeys(base_state.fingerprints, base_state.sequence)}
            opened = step.recording
            events.append(PlannedEvent(delivery, Outcome.APPLIED, Target.OPENED, None, opened))
        elif step.duplicate_of is not None:
            assert base is not None
            if step.duplicate_of == base.state.sequence:
                events.append(PlannedEvent(delivery, step.outcome, Target.BASE))
            else:
                run = base.earlier_id(step.duplicate_of)
                events.append(PlannedEvent(delivery, step.outcome, Target.EARLIER, earlier_id=run))
        else:
            target = Target.OPENED if opened is not None else Target.BASE
            if step.outcome is Outcome.APPLIED:
                events.append(PlannedEvent(delivery, step.outcome, target, latest, step.recording))
                if target is Target.OPENED:
                    opened = step.recording
                else:
                    base_state = step.recording
            else:
                events.append(PlannedEvent(delivery, step.outcome, target))
        latest = step.recording
    return _finish(key, base, base_state, opened, events, ())


def _finish(
    key: TrackKey,
    base: StoredRun | None,
    base_state: RecordingState | None,
    opened: RecordingState | None,
    events: list[PlannedEvent],
    deferred: Sequence[Delivery],
) -> TrackPlan:
    base_write: BaseWrite | None = None
    if base is not None:
        if base_state is not base.state:
            base_write = BaseWrite.UPDATE
        elif opened is not None:
            base_write = BaseWrite.SUPERSEDE
        else:
            base_write = BaseWrite.HOLD
    return TrackPlan(key, base, base_write, base_state, opened, tuple(events), tuple(deferred))


def _too_many_files(
    after: RecordingState, before: RecordingState | None, max_files: int | None
) -> bool:
    """The event added files past the bound (a recording already past it, with a lower
    bound set since, is left alone)."""
    if max_files is None or len(after.files) <= max_files:
        return False
    return (
        before is None or after.sequence != before.sequence or len(after.files) > len(before.files)
    )


def _rejected(delivery: Delivery, max_files: int) -> PlannedEvent:
    problem = {
        "field": "data.fileDetails",
        "message": f"the recording would hold more than {max_files} files "
        "(MAX_FILES_PER_RECORDING)",
        "type": "too_many_files",
    }
    return PlannedEvent(replace(delivery, problems=[problem]), Outcome.REJECTED, Target.NONE)


def plan_unapplied(delivery: Delivery) -> PlannedEvent:
    """An ignored or rejected delivery: a log row and nothing else."""
    return PlannedEvent(delivery, delivery.unapplied_outcome, Target.NONE)


def event_values(planned: PlannedEvent, recording_id: int | None) -> dict[str, Any]:
    """The log row of a planned event (every column but `id`)."""
    delivery = planned.delivery
    identity = delivery.identity
    return {
        "received_at": delivery.received_at,
        "webhook_type": delivery.webhook_type,
        "meeting_id": identity.meeting_id,
        "session_id": identity.session_id,
        "participant_id": identity.participant_id,
        "kind": identity.kind,
        "outcome": planned.outcome.value,
        "fingerprint": delivery.fingerprint,
        "recording_id": recording_id,
        "payload": delivery.payload,
        "error": None if delivery.problems is None else [dict(p) for p in delivery.problems],
        "body": delivery.body,
        "signature": delivery.signature,
    }
