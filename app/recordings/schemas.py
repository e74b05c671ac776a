"""The query API's view of a recording.

Documents are TypedDicts built straight from table rows and rendered by orjson (UTC
times with a "Z"); FastAPI still derives the OpenAPI schema from these types. Building
pydantic models per row and having FastAPI validate them again cost several times
the query itself."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from typing_extensions import TypedDict  # pydantic needs it before Python 3.12

from app.core.reader import Row
from app.recordings.lifecycle import Outcome, Status


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


class TimelineEntry(TypedDict):
    eventId: str
    webhookType: str
    receivedAt: datetime
    outcome: Outcome


class RecordingDetail(RecordingDocument):
    events: list[TimelineEntry]


def recording_document(row: Row) -> RecordingDocument:
    return {
        "id": str(row["id"]),
        "meetingId": row["meeting_id"],
        "sessionId": row["session_id"],
        "participantId": row["participant_id"],
        "kind": row["kind"],
        "sequence": row["sequence"],
        "status": Status(row["status"]),
        "startingAt": row["starting_at"],
        "startedAt": row["started_at"],
        "stoppingAt": row["stopping_at"],
        "stoppedAt": row["stopped_at"],
        "failedAt": row["failed_at"],
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
        "files": row["files"],
    }


def timeline_entry(row: Row) -> TimelineEntry:
    """One event of a recording's timeline, from a `get_with_timeline` row."""
    return {
        "eventId": str(row["event_id"]),
        "webhookType": row["event_webhook_type"],
        "receivedAt": row["event_received_at"],
        "outcome": Outcome(row["event_outcome"]),
    }
