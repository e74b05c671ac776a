"""Hypothesis strategies for webhook histories, and what a history means to the pure fold.

A history is several keys (2-6, sharing sessions and participants), each with one or two
lifecycles (a second one is a restart), the five track types in random orders, exact
duplicates, `-stopped` deliveries with (sometimes overlapping) files, and stray webhook
types the service must ignore. Ids are placeholders until `History.deliveries(prefix)`
makes them unique, so examples can share one database.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hypothesis import strategies as st

from app.rules.lifecycle import FoldResult, Status, TrackEvent, fold
from app.videosdk.documents import fingerprint_of
from tests.support.payloads import track_webhook

SESSIONS = ("s0", "s1")
PARTICIPANTS = ("p0", "p1")
KINDS = ("audio", "video", "screen_audio", "screen_video")
LIFECYCLE = (Status.STARTING, Status.STARTED, Status.STOPPING, Status.STOPPED, Status.FAILED)
TERMINAL = frozenset({Status.STOPPED, Status.FAILED})
FILE_NAMES = ("a", "b", "c", "d")
STRAY_TYPES = (
    "session-started",
    "session-ended",
    "recording-started",
    "recording-stopped",
    "hls-started",
    "participant-joined",
)
CLIENTS = 4  # concurrent senders in the multi-worker test

KeyTuple = tuple[str, str, str]  # (sessionId, participantId, kind)


@dataclass(frozen=True, slots=True)
class Step:
    """One delivery before ids are made unique. `key` is None for a stray type."""

    webhook_type: str
    session: str
    key: KeyTuple | None
    files: tuple[tuple[str, bool], ...] | None = None  # (name, alternative URL), -stopped only
    lifecycle: int = 0

    @property
    def status(self) -> Status | None:
        prefix = "participant-track-recording-"
        if self.key is None:
            return None
        return Status(self.webhook_type.removeprefix(prefix))


@dataclass(frozen=True, slots=True)
class Delivery:
    """A concrete webhook: its body and what the fold needs to know about it."""

    payload: dict[str, Any]
    key: KeyTuple | None
    status: Status | None
    files: tuple[dict[str, str], ...]
    fingerprint: str
    client: int

    def event(self, received_at: datetime) -> TrackEvent:
        assert self.status is not None
        return TrackEvent(self.status, self.fingerprint, received_at, self.files)


@dataclass(frozen=True, slots=True)
class History:
    steps: tuple[Step, ...]
    clients: tuple[int, ...]  # which concurrent client sends each step

    def order_free_keys(self, prefix: str) -> set[KeyTuple]:
        """The keys whose recordings, status and file set no delivery order can change.

        No restart is not enough under the README's rules: a repeated `-starting` or
        `-started` that arrives after the terminal event opens a new recording, and with
        both `-stopped` and `-failed` the first one applied decides the status."""
        per_key: dict[KeyTuple, list[Step]] = {}
        for step in self.steps:
            if step.key is not None:
                per_key.setdefault(step.key, []).append(step)
        free: set[KeyTuple] = set()
        for key, steps in per_key.items():
            counts = Counter(step.status for step in steps)
            terminals = TERMINAL & counts.keys()
            restarts = any(step.lifecycle > 0 for step in steps)
            repeated_start = counts[Status.STARTING] > 1 or counts[Status.STARTED] > 1
            if not restarts and len(terminals) <= 1 and not (terminals and repeated_start):
                free.add(concrete_key(key, prefix))
        return free

    def deliveries(self, prefix: str) -> list[Delivery]:
        return [
            _deliver(step, prefix, client)
            for step, client in zip(self.steps, self.clients, strict=True)
        ]


def _file(name: str, alternative: bool) -> dict[str, str]:
    path = f"/encoded/videos/{name}.mp4"
    url = f"https://cdn.videosdk.live{path}" + ("?copy=2" if alternative else "")
    return {"filePath": path, "fileUrl": url}


def concrete_key(key: KeyTuple, prefix: str) -> KeyTuple:
    """The key a placeholder key becomes in the deliveries made with `prefix`."""
    session, participant, kind = key
    return (f"{prefix}-{session}", f"{prefix}-{participant}", kind)


def _deliver(step: Step, prefix: str, client: int) -> Delivery:
    session = f"{prefix}-{step.session}"
    meeting = f"{prefix}-meeting-{step.session}"
    if step.key is None:
        payload: dict[str, Any] = {
            "webhookType": step.webhook_type,
            "data": {"meetingId": meeting, "sessionId": session},
        }
        return Delivery(payload, None, None, (), fingerprint_of(payload), client)
    status = step.status
    assert status is not None
    _, participant, kind = step.key
    files = tuple(_file(name, alt) for name, alt in step.files) if step.files is not None else ()
    payload = track_webhook(
        status.value,
        session_id=session,
        participant_id=f"{prefix}-{participant}",
        kind=kind,
        meeting_id=meeting,
        files=list(files) if step.files is not None else None,
    )
    key = concrete_key(step.key, prefix)
    return Delivery(payload, key, status, files, fingerprint_of(payload), client)


_files = st.lists(
    st.tuples(st.sampled_from(FILE_NAMES), st.sampled_from((False, False, False, True))),
    max_size=3,
).map(tuple)


@st.composite
def _lifecycle(draw: st.DrawFn, key: KeyTuple, index: int, restart_follows: bool) -> list[Step]:
    """One start-to-stop run of a key: a subset of the five types, in order or shuffled."""
    types = set(draw(st.lists(st.sampled_from(LIFECYCLE), min_size=1, max_size=5, unique=True)))
    if restart_follows:  # make the restart possible: a start to repeat and a terminal
        types |= {Status.STARTING, draw(st.sampled_from(sorted(TERMINAL)))}
    if index > 0:
        types.add(Status.STARTING)
    kinds = sorted(types, key=LIFECYCLE.index)
    if Status.STOPPED in types and draw(st.integers(0, 3)) == 0:
        kinds.append(Status.STOPPED)  # a second, different -stopped (more files)
    if draw(st.integers(0, 2)) == 0:
        kinds = list(draw(st.permutations(kinds)))
    return [
        Step(
            webhook_type=f"participant-track-recording-{status.value}",
            session=key[0],
            key=key,
            files=draw(_files) if status is Status.STOPPED else None,
            lifecycle=index,
        )
        for status in kinds
    ]


@st.composite
def histories(draw: st.DrawFn, max_keys: int = 6) -> History:
    keys: list[KeyTuple] = draw(
        st.lists(
            st.tuples(
                st.sampled_from(SESSIONS), st.sampled_from(PARTICIPANTS), st.sampled_from(KINDS)
            ),
            min_size=2,
            max_size=max_keys,
            unique=True,
        )
    )
    per_key: list[list[Step]] = []
    for key in keys:
        runs = draw(st.sampled_from((1, 1, 2)))
        steps: list[Step] = []
        for index in range(runs):
            steps += draw(_lifecycle(key, index, restart_follows=index < runs - 1))
        per_key.append(steps)
    # Interleave the keys, keeping each key's own order.
    tokens = [number for number, steps in enumerate(per_key) for _ in steps]
    order = draw(st.permutations(tokens))
    cursors = [0] * len(per_key)
    merged: list[Step] = []
    for number in order:
        merged.append(per_key[number][cursors[number]])
        cursors[number] += 1
    # Exact duplicates anywhere (a retry may even overtake its original).
    for source, position in draw(
        st.lists(
            st.tuples(st.integers(0, len(merged) - 1), st.integers(0, len(merged))), max_size=5
        )
    ):
        merged.insert(min(position, len(merged)), merged[source])
    for webhook_type, session, position in draw(
        st.lists(
            st.tuples(
                st.sampled_from(STRAY_TYPES),
                st.sampled_from(sorted({key[0] for key in keys})),
                st.integers(0, len(merged)),
            ),
            max_size=3,
        )
    ):
        merged.insert(min(position, len(merged)), Step(webhook_type, session, None))
    clients = draw(
        st.lists(st.integers(0, CLIENTS - 1), min_size=len(merged), max_size=len(merged))
    )
    return History(tuple(merged), tuple(clients))


def fold_with_sequences(events: Sequence[TrackEvent]) -> tuple[FoldResult, list[int]]:
    """The fold of a key's events, and the sequence of the recording each event touched
    (the latest once it was applied, or the earlier run a retry belongs to)."""
    result = fold(events)
    return result, list(result.sequences)


def sessions_of(deliveries: Iterable[Delivery]) -> list[str]:
    return sorted({str(delivery.payload["data"]["sessionId"]) for delivery in deliveries})
