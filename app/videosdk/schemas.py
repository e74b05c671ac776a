"""What VideoSDK sends: its track-recording webhooks, validated with a discriminated union.

The intake validates deliveries with these models; the rebuild reads the stored log with
the same ones, so the format sits below both.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from app.core.text import Identifier
from app.rules.lifecycle import Kind, Status

TRACK_WEBHOOK_PREFIX = "participant-track-recording-"
TRACK_WEBHOOK_TYPES: dict[str, Status] = {
    f"{TRACK_WEBHOOK_PREFIX}{status.value}": status for status in Status
}
WEBHOOK_TYPE_MAX_LENGTH = 255
MAX_FILES = 10_000


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


def type_field(document: dict[str, Any]) -> str:
    """Where a document names its type, as VideoSDK's server SDK reads it
    (`webhookType ?? type`): `webhookType`, unless it is absent or null."""
    return "webhookType" if document.get("webhookType") is not None else "type"


def validate_track_webhook(document: dict[str, Any]) -> TrackWebhook:
    """Validate a track-recording webhook, whichever field names its type. The models
    discriminate on `webhookType`: a `type`-only document is validated as a copy that has
    it (one level deep; the nested data is shared, not copied)."""
    field = type_field(document)
    tagged = document if field == "webhookType" else {**document, "webhookType": document[field]}
    return track_webhook_adapter.validate_python(tagged)
