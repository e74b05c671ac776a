"""The recording lifecycle as a pure fold: track events in, recording states out.

The intake service, the rebuild command and the property tests all call this module,
so the rules in the README live here and nowhere else. No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum


class Status(StrEnum):
    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    REJECTED = "rejected"


TERMINAL_STATUSES = frozenset({Status.STOPPED, Status.FAILED})
RESTARTING_STATUSES = frozenset({Status.STARTING, Status.STARTED})
_PROGRESS = {Status.STARTING: 0, Status.STARTED: 1, Status.STOPPING: 2}

# A file as VideoSDK described it: filePath, fileUrl and whatever else it sent.
FileEntry = Mapping[str, object]


@dataclass(frozen=True, slots=True)
class TrackEvent:
    """One accepted lifecycle webhook for a (session, participant, kind)."""

    status: Status
    fingerprint: str  # identifies an exact repeat of the same delivery
    received_at: datetime
    files: tuple[FileEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class RecordingState:
    """One start-to-stop run of a track."""

    sequence: int
    status: Status
    created_at: datetime
    updated_at: datetime
    received: Mapping[Status, datetime] = field(default_factory=dict)  # first receipt per type
    files: tuple[FileEntry, ...] = ()
    fingerprints: tuple[str, ...] = ()

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class Transition:
    recording: RecordingState
    outcome: Outcome
    opened: bool  # True when the event opened a new recording for the key


def opens_new_recording(latest: RecordingState | None, event: TrackEvent) -> bool:
    """A first event opens recording 1; a start after a finished run that had one, the next."""
    if latest is None:
        return True
    return (
        event.status in RESTARTING_STATUSES
        and latest.is_terminal
        and event.status in latest.received
    )


def next_status(current: Status, incoming: Status) -> Status:
    """The furthest status wins; the first terminal status is final."""
    if current in TERMINAL_STATUSES:
        return current
    if incoming in TERMINAL_STATUSES:
        return incoming
    return incoming if _PROGRESS[incoming] > _PROGRESS[current] else current


def merge_files(
    existing: Sequence[FileEntry], incoming: Iterable[FileEntry]
) -> tuple[FileEntry, ...]:
    """Files de-duplicated by filePath, in the order first received; none is ever dropped."""
    merged = list(existing)
    seen = {entry["filePath"] for entry in merged}
    for entry in incoming:
        path = entry["filePath"]
        if path not in seen:
            seen.add(path)
            merged.append(entry)
    return tuple(merged)


def transition(latest: RecordingState | None, event: TrackEvent) -> Transition:
    """Apply one event to the key whose latest recording is `latest`."""
    if opens_new_recording(latest, event):
        sequence = 1 if latest is None else latest.sequence + 1
        opened = RecordingState(
            sequence=sequence,
            status=event.status,
            created_at=event.received_at,
            updated_at=event.received_at,
            received={event.status: event.received_at},
            files=merge_files((), event.files),
            fingerprints=(event.fingerprint,),
        )
        return Transition(opened, Outcome.APPLIED, opened=True)
    assert latest is not None
    if event.fingerprint in latest.fingerprints:
        return Transition(latest, Outcome.DUPLICATE, opened=False)
    received = dict(latest.received)
    received.setdefault(event.status, event.received_at)
    updated = replace(
        latest,
        status=next_status(latest.status, event.status),
        updated_at=max(latest.updated_at, event.received_at),
        received=received,
        files=merge_files(latest.files, event.files),
        fingerprints=(*latest.fingerprints, event.fingerprint),
    )
    return Transition(updated, Outcome.APPLIED, opened=False)


@dataclass(frozen=True, slots=True)
class FoldResult:
    recordings: tuple[RecordingState, ...]
    outcomes: tuple[Outcome, ...]


def fold(events: Iterable[TrackEvent]) -> FoldResult:
    """All recordings of one key, from its events in the order they were applied."""
    recordings: list[RecordingState] = []
    outcomes: list[Outcome] = []
    for event in events:
        step = transition(recordings[-1] if recordings else None, event)
        if step.opened:
            recordings.append(step.recording)
        else:
            recordings[-1] = step.recording
        outcomes.append(step.outcome)
    return FoldResult(tuple(recordings), tuple(outcomes))
