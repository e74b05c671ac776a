"""`/v1/recordings`: list and fetch recordings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from app.core.auth import require_api_token
from app.core.errors import FastJSONResponse, NotFound, documented_errors
from app.core.pagination import (
    DEFAULT_LIMIT,
    MAX_ID,
    MAX_LIMIT,
    Page,
    decode_time_cursor,
    encode_cursor,
    page_response,
)
from app.core.query import FilterValue, UtcDateTime
from app.core.reader import Row, open_reader
from app.recordings import repository
from app.recordings.lifecycle import Status
from app.recordings.schemas import (
    RecordingDetail,
    RecordingDocument,
    recording_document,
    timeline_entry,
)
from app.webhooks.schemas import Kind

router = APIRouter(
    prefix="/v1/recordings",
    tags=["recordings"],
    dependencies=[Depends(require_api_token)],
    responses=documented_errors(401, 422, 503),
)


def canonical_recording_id(recording_id: str) -> int | None:
    """Only the canonical decimal form names a recording ("01" does not); the length check
    comes first so a 10,000-digit id never reaches int()."""
    canonical = recording_id.isascii() and recording_id.isdigit() and recording_id[0] != "0"
    if canonical and len(recording_id) <= len(str(MAX_ID)) and int(recording_id) <= MAX_ID:
        return int(recording_id)
    return None


@router.get("", response_model=Page[RecordingDocument])
async def list_recordings(
    request: Request,
    meetingId: FilterValue = None,
    sessionId: FilterValue = None,
    participantId: FilterValue = None,
    kind: Kind | None = None,
    status: Annotated[list[Status] | None, Query()] = None,
    updatedAfter: UtcDateTime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> FastJSONResponse:
    filters = repository.RecordingFilter(
        meeting_id=meetingId,
        session_id=sessionId,
        participant_id=participantId,
        kind=kind,
        statuses=[s.value for s in status or ()],
        updated_after=updatedAfter,
    )
    after = decode_time_cursor(cursor) if cursor else None
    async with open_reader(request) as reader:
        rows = await repository.list_page(reader, filters, limit + 1, after)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor(last["updated_at"].isoformat(), last["id"])
    return page_response([recording_document(row) for row in rows], next_cursor)


@router.get("/{recording_id}", response_model=RecordingDetail, responses=documented_errors(404))
async def get_recording(recording_id: str, request: Request) -> FastJSONResponse:
    # Any id that names no recording, whatever its format, is a 404.
    number = canonical_recording_id(recording_id)
    rows: Sequence[Row] = ()
    if number is not None:
        async with open_reader(request) as reader:
            rows = await repository.get_with_timeline(reader, number)
    if not rows:
        raise NotFound(f"no recording with id {recording_id!r}", error="recording_not_found")
    detail: RecordingDetail = {
        **recording_document(rows[0]),
        "events": [timeline_entry(row) for row in rows if row["event_id"] is not None],
    }
    return FastJSONResponse(detail)
