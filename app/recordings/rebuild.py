"""Recompute every recording from the webhook event log and report (or repair) where the
stored state differs.

The log is the source of truth: its applied and duplicate events, read in id order (the
order the service applied them; it holds the key's row lock while appending), are mapped
exactly as intake maps them and folded with the lifecycle rules in `lifecycle`.

What `repair=True` does, in the same transaction as the comparison:
- every key with a recording-level difference gets all of its recordings rewritten from
  the fold (state, meeting id, latest flag; a missing sequence is inserted);
- every event whose `recording_id` points at the wrong recording is pointed at the right
  one (the only change ever made to the log);
- stored recordings that no event explains are deleted (if an ignored or rejected event
  still points at one, the foreign key refuses and the whole repair is rolled back).
It never changes an event's outcome, fingerprint or payload: those are history (what the
sender was told, what it sent), so such differences are reported and stay.

On PostgreSQL the work runs in one REPEATABLE READ transaction, so it compares one
consistent snapshot; a repair that races a concurrent intake write fails with a
serialisation error and changes nothing (run it again). Memory grows with the number of
recordings (the fold keeps every key's state), not with the number of events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.recordings import repository as recordings
from app.recordings.lifecycle import Outcome, RecordingState, transition
from app.recordings.repository import TIMESTAMP_COLUMNS, TrackKey, state_from_row
from app.webhooks import repository as events
from app.webhooks.schemas import track_webhook_adapter
from app.webhooks.service import fingerprint_of, track_event_of, track_key_of

# Only these outcomes ever touched a recording; ignored and rejected deliveries did not.
FOLDED_OUTCOMES = (Outcome.APPLIED, Outcome.DUPLICATE)


@dataclass(frozen=True, slots=True)
class Difference:
    """One way the stored state disagrees with the log. `aspect` names what differs:
    a recording column (`status`, `files`, `started_at`, ...), `count`, `missing` or
    `unexplained` for a key's recordings, or `outcome`, `recording_id`, `fingerprint` or
    `payload` for an event."""

    aspect: str
    description: str
    recording_id: int | None = None
    event_id: int | None = None


@dataclass(slots=True)
class RebuildReport:
    events_read: int = 0
    keys: int = 0
    recordings_rebuilt: int = 0
    recordings_stored: int = 0
    differences: list[Difference] = field(default_factory=list)
    repaired: bool = False

    def lines(self) -> list[str]:
        """The counts, then one line per difference."""
        verdict = f"{len(self.differences)} difference(s)"
        if self.repaired:
            verdict += ", repaired"
        return [
            f"events read: {self.events_read}",
            f"keys: {self.keys}",
            f"recordings rebuilt: {self.recordings_rebuilt}",
            f"recordings stored: {self.recordings_stored}",
            verdict,
            *(f"- {difference.description}" for difference in self.differences),
        ]


@dataclass(frozen=True, slots=True)
class _Stored:
    id: int
    key: TrackKey
    meeting_id: str
    is_latest: bool
    state: RecordingState


@dataclass(slots=True)
class _KeyFold:
    meeting_id: str  # the key's first event named it; later recordings inherit it
    recordings: list[RecordingState] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Relink:
    event_id: int
    key: TrackKey
    sequence: int


def _name(key: TrackKey, sequence: int | None = None) -> str:
    where = f"({key.session_id}, {key.participant_id}, {key.kind})"
    return where if sequence is None else f"{where} #{sequence}"


async def rebuild(session: AsyncSession, repair: bool) -> RebuildReport:
    """Fold the log, compare with the recordings table, and repair it if asked.

    Runs its own transaction on `session` (which must not have one open)."""
    report = RebuildReport()
    async with session.begin():
        if session.get_bind().dialect.name == "postgresql":
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        stored = await _load_stored(session, report)
        by_id = {row.id: row for rows in stored.values() for row in rows.values()}
        folded, relinks = await _fold_log(session, by_id, report)
        dirty = _compare(folded, stored, report)
        report.keys = len(folded)
        report.recordings_rebuilt = sum(len(key_fold.recordings) for key_fold in folded.values())
        if repair and report.differences:
            await _repair(session, folded, stored, dirty, relinks)
            report.repaired = True
    return report


async def _load_stored(
    session: AsyncSession, report: RebuildReport
) -> dict[TrackKey, dict[int, _Stored]]:
    stored: dict[TrackKey, dict[int, _Stored]] = {}
    async for row in recordings.stream_all(session):
        key = TrackKey(row.session_id, row.participant_id, row.kind)
        stored.setdefault(key, {})[row.sequence] = _Stored(
            row.id, key, row.meeting_id, row.is_latest, state_from_row(row)
        )
        report.recordings_stored += 1
    return stored


async def _fold_log(
    session: AsyncSession, by_id: dict[int, _Stored], report: RebuildReport
) -> tuple[dict[TrackKey, _KeyFold], list[_Relink]]:
    """Each key's recordings from its events; checks each event's stored outcome and link.

    Steps through `transition` event by event (exactly what `lifecycle.fold` does) so
    that no key's events need to be held in memory."""
    folded: dict[TrackKey, _KeyFold] = {}
    relinks: list[_Relink] = []
    differences = report.differences
    async for row in events.stream_with_outcomes(session, FOLDED_OUTCOMES):
        report.events_read += 1
        try:
            webhook = track_webhook_adapter.validate_python(row.payload)
        except ValidationError as exc:
            differences.append(
                Difference(
                    "payload",
                    f"event {row.id}: its stored payload no longer validates "
                    f"({exc.error_count()} error(s)); left out of the rebuild",
                    event_id=row.id,
                )
            )
            continue
        # The payload is the source; a fingerprint that disagrees with it is the damage.
        fingerprint = fingerprint_of(row.payload)
        if fingerprint != row.fingerprint:
            differences.append(
                Difference(
                    "fingerprint",
                    f"event {row.id}: stored fingerprint {row.fingerprint[:12]}... is not "
                    f"its payload's {fingerprint[:12]}...",
                    event_id=row.id,
                )
            )
        key = track_key_of(webhook)
        key_fold = folded.setdefault(key, _KeyFold(webhook.data.meetingId))
        latest = key_fold.recordings[-1] if key_fold.recordings else None
        step = transition(latest, track_event_of(webhook, fingerprint, row.received_at))
        if step.opened:
            key_fold.recordings.append(step.recording)
        else:
            key_fold.recordings[-1] = step.recording
        sequence = step.recording.sequence
        if row.outcome != step.outcome.value:
            differences.append(
                Difference(
                    "outcome",
                    f"event {row.id} ({row.webhook_type}, {_name(key, sequence)}): stored "
                    f"outcome {row.outcome!r}, the log gives {step.outcome.value!r}",
                    event_id=row.id,
                )
            )
        linked = by_id.get(row.recording_id) if row.recording_id is not None else None
        if linked is None or linked.key != key or linked.state.sequence != sequence:
            now = (
                "no recording"
                if linked is None
                else f"recording {linked.id} {_name(linked.key, linked.state.sequence)}"
            )
            differences.append(
                Difference(
                    "recording_id",
                    f"event {row.id} ({row.webhook_type}): points at {now}, "
                    f"the log gives {_name(key, sequence)}",
                    recording_id=row.recording_id,
                    event_id=row.id,
                )
            )
            relinks.append(_Relink(row.id, key, sequence))
    return folded, relinks


def _compare(
    folded: dict[TrackKey, _KeyFold],
    stored: dict[TrackKey, dict[int, _Stored]],
    report: RebuildReport,
) -> set[TrackKey]:
    """Record every recording-level difference; returns the keys that have one."""
    dirty: set[TrackKey] = set()
    for key in sorted(folded.keys() | stored.keys(), key=_sort_key):
        found = _compare_key(key, folded.get(key), stored.get(key, {}))
        if found:
            dirty.add(key)
            report.differences.extend(found)
    return dirty


def _sort_key(key: TrackKey) -> tuple[str, str, str]:
    return (key.session_id, key.participant_id, key.kind)


def _compare_key(
    key: TrackKey, key_fold: _KeyFold | None, stored: dict[int, _Stored]
) -> list[Difference]:
    expected = key_fold.recordings if key_fold is not None else []
    found: list[Difference] = []
    if len(expected) != len(stored):
        found.append(
            Difference(
                "count",
                f"key {_name(key)}: {len(stored)} recording(s) stored, "
                f"the log gives {len(expected)}",
            )
        )
    for state in expected:
        row = stored.get(state.sequence)
        if row is None:
            found.append(
                Difference(
                    "missing",
                    f"recording {_name(key, state.sequence)} is missing "
                    f"(the log gives status {state.status.value!r})",
                )
            )
            continue
        assert key_fold is not None
        is_latest = state.sequence == expected[-1].sequence
        found.extend(_compare_recording(row, state, key_fold.meeting_id, is_latest))
    sequences = {state.sequence for state in expected}
    for sequence, row in sorted(stored.items()):
        if sequence not in sequences:
            found.append(
                Difference(
                    "unexplained",
                    f"recording {row.id} {_name(key, sequence)} "
                    f"(status {row.state.status.value!r}) is explained by no event",
                    recording_id=row.id,
                )
            )
    return found


def _compare_recording(
    row: _Stored, state: RecordingState, meeting_id: str, is_latest: bool
) -> list[Difference]:
    name = f"recording {row.id} {_name(row.key, state.sequence)}"
    have = row.state
    found: list[Difference] = []

    def differs(aspect: str, stored_value: object, folded_value: object) -> None:
        if stored_value != folded_value:
            found.append(
                Difference(
                    aspect,
                    f"{name}: {aspect} is {stored_value!r}, the log gives {folded_value!r}",
                    recording_id=row.id,
                )
            )

    differs("meeting_id", row.meeting_id, meeting_id)
    differs("is_latest", row.is_latest, is_latest)
    differs("status", have.status.value, state.status.value)
    for status, column in TIMESTAMP_COLUMNS.items():
        differs(column, _stamp(have.received.get(status)), _stamp(state.received.get(status)))
    differs("created_at", _stamp(have.created_at), _stamp(state.created_at))
    differs("updated_at", _stamp(have.updated_at), _stamp(state.updated_at))
    if _files(have) != _files(state):
        found.append(
            Difference(
                "files",
                f"{name}: files differ: {_describe_files(have, state)}",
                recording_id=row.id,
            )
        )
    if list(have.fingerprints) != list(state.fingerprints):
        found.append(
            Difference(
                "event_fingerprints",
                f"{name}: holds {len(have.fingerprints)} event fingerprint(s), the log gives "
                f"{len(state.fingerprints)}"
                + ("" if set(have.fingerprints) != set(state.fingerprints) else " (order differs)"),
                recording_id=row.id,
            )
        )
    return found


def _stamp(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _files(state: RecordingState) -> list[dict[str, object]]:
    return [dict(entry) for entry in state.files]


def _describe_files(have: RecordingState, want: RecordingState) -> str:
    stored = [str(entry["filePath"]) for entry in have.files]
    expected = [str(entry["filePath"]) for entry in want.files]
    parts = []
    if missing := [path for path in expected if path not in stored]:
        parts.append(f"missing {', '.join(missing)}")
    if extra := [path for path in stored if path not in expected]:
        parts.append(f"not in the log {', '.join(extra)}")
    if not parts:
        parts.append(
            "same paths, different order" if stored != expected else "same paths, other details"
        )
    return "; ".join(parts)


async def _repair(
    session: AsyncSession,
    folded: dict[TrackKey, _KeyFold],
    stored: dict[TrackKey, dict[int, _Stored]],
    dirty: set[TrackKey],
    relinks: list[_Relink],
) -> None:
    """Rewrite the dirty keys from the fold, relink events, delete the unexplained.

    The order keeps every constraint true after each statement: no key has two latest
    rows (flags cleared first), a (key, sequence) is only inserted where none is stored,
    and a row is deleted only once no event the fold knows points at it."""
    ids: dict[tuple[TrackKey, int], int] = {
        (key, seq): row.id for key, rows in stored.items() for seq, row in rows.items()
    }
    unexplained: list[int] = []
    for key in sorted(dirty, key=_sort_key):
        await recordings.clear_latest(session, key)
        key_fold = folded.get(key)
        expected = key_fold.recordings if key_fold is not None else []
        for state in expected:
            assert key_fold is not None
            is_latest = state is expected[-1]
            recording_id = ids.get((key, state.sequence))
            if recording_id is None:
                ids[(key, state.sequence)] = await recordings.insert_state(
                    session, key, key_fold.meeting_id, state, is_latest
                )
            else:
                await recordings.rewrite(
                    session, recording_id, key_fold.meeting_id, state, is_latest
                )
        sequences = {state.sequence for state in expected}
        unexplained.extend(
            row.id for seq, row in stored.get(key, {}).items() if seq not in sequences
        )
    for relink in relinks:
        await events.link_recording(session, relink.event_id, ids[(relink.key, relink.sequence)])
    await recordings.delete_many(session, unexplained)
