"""The query API's view of a recording."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from app.recordings.lifecycle import Outcome, Status
from app.recordings.models import Recording
from app.webhooks.models import WebhookEvent

# Timestamps are aware UTC datetimes; pydantic writes them as ISO-8601 with a "Z".


class RecordingOut(BaseModel):
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

    @classmethod
    def of(cls, row: Recording) -> RecordingOut:
        return cls(
            id=str(row.id),
            meetingId=row.meeting_id,
            sessionId=row.session_id,
            participantId=row.participant_id,
            kind=row.kind,
            sequence=row.sequence,
            status=Status(row.status),
            startingAt=row.starting_at,
            startedAt=row.started_at,
            stoppingAt=row.stopping_at,
            stoppedAt=row.stopped_at,
            failedAt=row.failed_at,
            createdAt=row.created_at,
            updatedAt=row.updated_at,
            files=row.files,
        )


class TimelineEntry(BaseModel):
    eventId: str
    webhookType: str
    receivedAt: datetime
    outcome: Outcome

    @classmethod
    def of(cls, event: WebhookEvent) -> TimelineEntry:
        return cls(
            eventId=str(event.id),
            webhookType=event.webhook_type,
            receivedAt=event.received_at,
            outcome=Outcome(event.outcome),
        )


class RecordingDetail(RecordingOut):
    events: list[TimelineEntry]
