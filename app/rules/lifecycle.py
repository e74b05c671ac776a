"""The recording lifecycle as a pure fold: track events in, recording states out.

Every rule of the README's "The lifecycle rules" is coded here and nowhere else: the
ledger's write plan, the rebuild command and the property tests all call this module.
No I/O, and nothing of the rest of the app is imported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Literal, get_args


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


Kind = Literal["audio", "video", "screen_audio", "screen_video"]
KINDS: tuple[str, ...] = get_args(Kind)

TERMINAL_STATUSES = frozenset({Status.STOPPED, Status.FAILED})
# A run still expecting an event: one that stays so, receiving nothing, is stuck.
OPEN_STATUSES = frozenset(Status) - TERMINAL_STATUSES
RESTARTING_STATUSES = frozenset({Status.STARTING, Status.STARTED})
_PROGRESS = {Status.STARTING: 0, Status.STARTED: 1, Status.STOPPING: 2}

# A file as VideoSDK described it: filePath, fileUrl and whatever else it sent.
FileEntry = Mapping[str, object]


@dataclass(frozen=True, slots=True)
class TrackKey:
    """One participant's track in one session: its recordings are the runs of this key."""

    session_id: str
    participant_id: str
    kind: str


@dataclass(frozen=True, slots=True)
class TrackEvent:
    """One accepted lifecycle webhook for a track."""

    status: Status
    fingerprint: str  # identifies an exact repeat of the same delivery
    received_at: datetime
    files: tuple[FileEntry, ...] = ()
    meeting_id: str = field(default="", kw_only=True)


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
    meeting_id: str = field(default="", kw_only=True)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class Transition:
    recording: RecordingState  # the track's latest recording after the event
    outcome: Outcome
    opened: bool  # True when the event opened a new recording for the key
    duplicate_of: int | None = None  # a retry of an earlier run's delivery: that run

    @property
    def sequence(self) -> int:
        """The run the event belongs to."""
        return self.duplicate_of if self.duplicate_of is not None else self.recording.sequence


# The fingerprints a track's earlier (not latest) runs hold, to their run's sequence.
EarlierRuns = Mapping[str, int]
_NO_EARLIER_RUNS: EarlierRuns = {}


def is_stuck(status: Status, updated_at: datetime, stuck_before: datetime) -> bool:
    """Not finished, and nothing applied to it since `stuck_before` (now minus
    STUCK_AFTER_SECONDS): a lost -stopped, or the run a retried -started opened."""
    return status in OPEN_STATUSES and updated_at < stuck_before


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


def transition(
    latest: RecordingState | None, event: TrackEvent, earlier: EarlierRuns = _NO_EARLIER_RUNS
) -> Transition:
    """Apply one event to the key whose latest recording is `latest` (and whose earlier
    runs hold the fingerprints in `earlier`)."""
    if latest is not None and event.files:
        # Files belong to one run, so a delivery that carries files and repeats one a run of
        # the track already holds is a retry of it, whichever run is the latest now.
        if event.fingerprint in latest.fingerprints:
            return Transition(latest, Outcome.DUPLICATE, opened=False)
        if (sequence := earlier.get(event.fingerprint)) is not None:
            return Transition(latest, Outcome.DUPLICATE, opened=False, duplicate_of=sequence)
    if opens_new_recording(latest, event):
        opened = RecordingState(
            sequence=1 if latest is None else latest.sequence + 1,
            status=event.status,
            created_at=event.received_at,
            updated_at=event.received_at,
            received={event.status: event.received_at},
            files=merge_files((), event.files),
            fingerprints=(event.fingerprint,),
            # The track's first event names its meetingId; later runs inherit it.
            meeting_id=event.meeting_id if latest is None else latest.meeting_id,
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


class TrackFold:
    """All runs of one track, folded event by event (the fold, and rebuild's per key)."""

    def __init__(self) -> None:
        self.recordings: list[RecordingState] = []
        self._earlier: dict[str, int] = {}

    @classmethod
    def resumed(cls, runs: Sequence[RecordingState]) -> TrackFold:
        """The fold as it stood after a track's first events, from the runs they made
        (`runs`: its runs 1..n in order, as those events left them): the next events fold
        exactly as they would have after those events themselves."""
        if [run.sequence for run in runs] != list(range(1, len(runs) + 1)):
            raise ValueError(f"runs 1..{len(runs)} expected, not {[r.sequence for r in runs]}")
        track = cls()
        for run in runs:
            if track.recordings:  # as `apply` does when a run opens: later runs win
                latest = track.recordings[-1]
                track._earlier.update(dict.fromkeys(latest.fingerprints, latest.sequence))
            track.recordings.append(run)
        return track

    def apply(self, event: TrackEvent) -> Transition:
        latest = self.recordings[-1] if self.recordings else None
        step = transition(latest, event, self._earlier)
        if step.opened:
            if latest is not None:  # a run, once superseded, never changes again
                self._earlier.update(dict.fromkeys(latest.fingerprints, latest.sequence))
            self.recordings.append(step.recording)
        elif step.duplicate_of is None:
            self.recordings[-1] = step.recording
        return step


@dataclass(frozen=True, slots=True)
class FoldResult:
    recordings: tuple[RecordingState, ...]
    outcomes: tuple[Outcome, ...]
    sequences: tuple[int, ...] = ()  # the run each event belongs to


def fold(events: Iterable[TrackEvent]) -> FoldResult:
    """All recordings of one key, from its events in the order they were applied."""
    track = TrackFold()
    steps = [track.apply(event) for event in events]
    return FoldResult(
        tuple(track.recordings),
        tuple(step.outcome for step in steps),
        tuple(step.sequence for step in steps),
    )
