"""What VideoSDK sends (validated with a discriminated union) and what we answer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict  # pydantic needs it before Python 3.12

from app.core.reader import Row
from app.core.text import Identifier
from app.recordings.lifecycle import Outcome, Status

TRACK_WEBHOOK_PREFIX = "participant-track-recording-"
TRACK_WEBHOOK_TYPES: dict[str, Status] = {
    f"{TRACK_WEBHOOK_PREFIX}{status.value}": status for status in Status
}
MAX_FILES = 10_000


Kind = Literal["audio", "video", "screen_audio", "screen_video"]


class FileDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    filePath: Annotated[str, Field(min_length=1, max_length=4096)]
    fileUrl: Annotated[str, Field(min_length=1, max_length=8192)]


class TrackData(BaseModel):
    model_config = ConfigDict(extra="allow")

    meetingId: Identifier
    sessionId: Identifier
    participantId: Identifier
    kind: Kind
    # Carried by -stopped; accepted on every type so that no file URL is ever lost.
    fileDetails: Annotated[list[FileDetail], Field(max_length=MAX_FILES)] | None = None


class _TrackWebhook(BaseModel):
    model_config = ConfigDict(extra="allow")

    data: TrackData


class StartingWebhook(_TrackWebhook):
    webhookType: Literal["participant-track-recording-starting"]


class StartedWebhook(_TrackWebhook):
    webhookType: Literal["participant-track-recording-started"]


class StoppingWebhook(_TrackWebhook):
    webhookType: Literal["participant-track-recording-stopping"]


class StoppedWebhook(_TrackWebhook):
    webhookType: Literal["participant-track-recording-stopped"]


class FailedWebhook(_TrackWebhook):
    webhookType: Literal["participant-track-recording-failed"]


TrackWebhook = Annotated[
    StartingWebhook | StartedWebhook | StoppingWebhook | StoppedWebhook | FailedWebhook,
    Field(discriminator="webhookType"),
]
track_webhook_adapter: TypeAdapter[TrackWebhook] = TypeAdapter(TrackWebhook)


class WebhookAccepted(TypedDict):
    """The 200 answer to a delivery (rendered directly, like every document)."""

    status: Outcome  # applied, duplicate or ignored; rejected deliveries get a 422
    eventId: str
    recordingId: str | None


class WebhookEventDocument(TypedDict):
    """One delivery in the raw log, as `/v1/webhook-events` shows it."""

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


def webhook_event_document(row: Row) -> WebhookEventDocument:
    recording_id = row["recording_id"]
    return {
        "id": str(row["id"]),
        "receivedAt": row["received_at"],
        "webhookType": row["webhook_type"],
        "outcome": Outcome(row["outcome"]),
        "meetingId": row["meeting_id"],
        "sessionId": row["session_id"],
        "participantId": row["participant_id"],
        "kind": row["kind"],
        "recordingId": None if recording_id is None else str(recording_id),
        "error": row["error"],
        "payload": row["payload"],
    }
