"""The query API's documents.

They are TypedDicts built straight from the ledger's typed rows and rendered by orjson
(UTC times with a "Z"); FastAPI still derives the OpenAPI schema from these types.
Building pydantic models per row and having FastAPI validate them again cost several
times the query itself."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from typing_extensions import TypedDict  # pydantic needs it before Python 3.12

from app.ledger.rows import EventRow, RecordingRow, RecordingWithTimeline, TimelineRow
from app.rules.lifecycle import Outcome, Status, is_stuck


class RecordingDocument(TypedDict):
    id: str
    meetingId: str
    sessionId: str
    participantId: str
    kind: str
    sequence: int
    status: Status
    startingAt: datetime | None
    startedAt: datetime | None
    stoppingAt: datetime | None
    stoppedAt: datetime | None
    failedAt: datetime | None
    createdAt: datetime
    updatedAt: datetime
    files: list[dict[str, Any]]
    version: int  # grows with every change of the recording
    stuck: bool  # not finished, and nothing received for STUCK_AFTER_SECONDS


class TimelineEntry(TypedDict):
    eventId: str
    webhookType: str
    receivedAt: datetime
    outcome: Outcome


class RecordingDetail(RecordingDocument):
    events: list[TimelineEntry]


class WebhookEventDocument(TypedDict):
    """One delivery in the raw log."""

    id: str
    receivedAt: datetime
    webhookType: str
    outcome: Outcome
    meetingId: str | None
    sessionId: str | None
    participantId: str | None
    kind: str | None
    recordingId: str | None
    error: list[dict[str, Any]] | None
    payload: dict[str, Any]


def recording_document(row: RecordingRow, stuck_before: datetime) -> RecordingDocument:
    """`stuck_before`: now minus STUCK_AFTER_SECONDS, one instant for the whole answer."""
    status = Status(row.status)
    return {
        "id": str(row.id),
        "meetingId": row.meeting_id,
        "sessionId": row.session_id,
        "participantId": row.participant_id,
        "kind": row.kind,
        "sequence": row.sequence,
        "status": status,
        "startingAt": row.starting_at,
        "startedAt": row.started_at,
        "stoppingAt": row.stopping_at,
        "stoppedAt": row.stopped_at,
        "failedAt": row.failed_at,
        "createdAt": row.created_at,
        "updatedAt": row.updated_at,
        "files": row.files,
        "version": row.version,
        "stuck": is_stuck(status, row.updated_at, stuck_before),
    }


def timeline_entry(row: TimelineRow) -> TimelineEntry:
    return {
        "eventId": str(row.id),
        "webhookType": row.webhook_type,
        "receivedAt": row.received_at,
        "outcome": Outcome(row.outcome),
    }


def recording_detail(found: RecordingWithTimeline, stuck_before: datetime) -> RecordingDetail:
    return {
        **recording_document(found.recording, stuck_before),
        "events": [timeline_entry(event) for event in found.events],
    }


def webhook_event_document(row: EventRow) -> WebhookEventDocument:
    return {
        "id": str(row.id),
        "receivedAt": row.received_at,
        "webhookType": row.webhook_type,
        "outcome": Outcome(row.outcome),
        "meetingId": row.meeting_id,
        "sessionId": row.session_id,
        "participantId": row.participant_id,
        "kind": row.kind,
        "recordingId": None if row.recording_id is None else str(row.recording_id),
        "error": row.error,
        "payload": row.payload,
    }
