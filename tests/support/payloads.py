"""Webhook bodies built from the shared VideoSDK fixtures."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

# A copy of ../shared/fixtures/videosdk, so the suite runs from any checkout.
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "videosdk"
LIFECYCLE = ("starting", "started", "stopping", "stopped", "failed")


@cache
def _fixture(status: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (FIXTURES / f"participant-track-recording-{status}.json").read_text()
    )
    return loaded


def track_webhook(
    status: str,
    *,
    session_id: str | None = None,
    participant_id: str | None = None,
    kind: str | None = None,
    meeting_id: str | None = None,
    files: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A fixture payload of the given status, with ids and files overridden as asked."""
    body = copy.deepcopy(_fixture(status))
    data = body["data"]
    for field, value in (
        ("sessionId", session_id),
        ("participantId", participant_id),
        ("kind", kind),
        ("meetingId", meeting_id),
    ):
        if value is not None:
            data[field] = value
    if files is not None:
        data["fileDetails"] = files
    return body


def file_entry(name: str) -> dict[str, str]:
    return {
        "filePath": f"/encoded/videos/{name}.mp4",
        "fileUrl": f"https://cdn.videosdk.live/encoded/videos/{name}.mp4",
    }
