"""What intake answers to a delivery (rendered directly, like every document)."""

from __future__ import annotations

from typing_extensions import TypedDict  # pydantic needs it before Python 3.12

from app.ledger.seam import Committed
from app.rules.lifecycle import Outcome


class WebhookAccepted(TypedDict):
    status: Outcome  # applied, duplicate or ignored; rejected deliveries get a 422
    eventId: str
    recordingId: str | None


def webhook_accepted(committed: Committed) -> WebhookAccepted:
    recording_id = committed.recording_id
    return {
        "status": committed.outcome,
        "eventId": str(committed.event_id),
        "recordingId": None if recording_id is None else str(recording_id),
    }
