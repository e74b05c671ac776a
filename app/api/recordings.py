"""`/v1/recordings`: list and fetch recordings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from app.api.auth import require_api_token
from app.api.cursors import (
    DEFAULT_LIMIT,
    MAX_ID,
    MAX_LIMIT,
    Page,
    decode_time_cursor,
    encode_cursor,
    page_response,
)
from app.api.deps import ledger_of, stuck_before
from app.api.documents import (
    RecordingDetail,
    RecordingDocument,
    recording_detail,
    recording_document,
)
from app.api.params import FilterValue, UtcDateTime
from app.core.errors import NotFound
from app.core.http import FastJSONResponse, documented_errors, echoed
from app.ledger import queries
from app.rules.lifecycle import Kind, Status

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
    updatedBefore: UtcDateTime | None = None,
    stuck: Annotated[
        bool | None,
        Query(
            description="Only recordings not finished that received nothing for "
            "STUCK_AFTER_SECONDS (true), or only the others (false)"
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> FastJSONResponse:
    now_stuck_before = stuck_before(request)
    filters = queries.RecordingFilter(
        meeting_id=meetingId,
        session_id=sessionId,
        participant_id=participantId,
        kind=kind,
        statuses=[s.value for s in status or ()],
        updated_after=updatedAfter,
        updated_before=updatedBefore,
        stuck=stuck,
        stuck_before=now_stuck_before,
    )
    after = decode_time_cursor(cursor) if cursor else None
    async with ledger_of(request).reader() as reader:
        page = await queries.list_recordings(reader, filters, limit, after)
    next_cursor = None
    if page.more:
        last = page.items[-1]
        next_cursor = encode_cursor(last.updated_at.isoformat(), last.id)
    documents = [recording_document(row, now_stuck_before) for row in page.items]
    return page_response(documents, next_cursor)


@router.get("/{recording_id}", response_model=RecordingDetail, responses=documented_errors(404))
async def get_recording(recording_id: str, request: Request) -> FastJSONResponse:
    # Any id that names no recording, whatever its format, is a 404.
    number = canonical_recording_id(recording_id)
    found = None
    if number is not None:
        async with ledger_of(request).reader() as reader:
            found = await queries.get_recording(reader, number)
    if found is None:
        raise NotFound(f"no recording with id {echoed(recording_id)}", error="recording_not_found")
    return FastJSONResponse(recording_detail(found, stuck_before(request)))
