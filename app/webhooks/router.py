"""`POST /webhooks/videosdk` (intake) and `GET /v1/webhook-events` (the raw log)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AfterValidator, StringConstraints

from app.core.auth import require_api_token
from app.core.context import ReadSessionDep, get_context
from app.core.errors import (
    BadRequest,
    FastJSONResponse,
    PayloadTooLarge,
    UnsupportedMediaType,
    documented_errors,
)
from app.core.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Page,
    decode_id_cursor,
    encode_cursor,
    page_response,
)
from app.core.query import FilterValue
from app.core.text import reject_nul
from app.recordings.lifecycle import Outcome
from app.webhooks import repository
from app.webhooks.models import WEBHOOK_TYPE_MAX_LENGTH
from app.webhooks.schemas import (
    WebhookAccepted,
    WebhookEventDocument,
    track_webhook_adapter,
    webhook_event_document,
)
from app.webhooks.service import WebhookIntake

SIGNATURE_HEADER = "videosdk-signature"
WebhookTypeFilter = Annotated[
    str,
    StringConstraints(min_length=1, max_length=WEBHOOK_TYPE_MAX_LENGTH),
    AfterValidator(reject_nul),
]

intake_router = APIRouter(tags=["webhooks"])
events_router = APIRouter(
    prefix="/v1/webhook-events",
    tags=["webhook events"],
    dependencies=[Depends(require_api_token)],
    responses=documented_errors(401, 422, 503),
)


def get_intake(request: Request) -> WebhookIntake:
    intake = request.app.state.intake
    assert isinstance(intake, WebhookIntake), "the lifespan has not run"
    return intake


def _is_json_media_type(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


async def read_limited_body(request: Request) -> bytes:
    """The raw body, refused with 413 as soon as it passes MAX_BODY_BYTES (chunked too)."""
    limit = get_context(request).settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise BadRequest("Content-Length is not a number", error="bad_content_length")
        # More digits than the limit has means larger than the limit (and int() stays cheap).
        if len(declared.lstrip("0")) > len(str(limit)) or int(declared) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# The body is read raw (the signature covers the bytes), so its schema is documented by
# hand; the models it refers to are added to the document's components in main.py.
_BODY_SCHEMA = track_webhook_adapter.json_schema(ref_template="#/components/schemas/{model}")
INTAKE_SCHEMA_COMPONENTS: dict[str, Any] = _BODY_SCHEMA.pop("$defs", {})

_REQUEST_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _BODY_SCHEMA}},
    },
    "parameters": [
        {
            "name": SIGNATURE_HEADER,
            "in": "header",
            "required": False,
            "description": "base64 RSA-SHA256 signature of the body (required unless "
            "WEBHOOK_SIGNATURE=off)",
            "schema": {"type": "string"},
        }
    ],
}


@intake_router.post(
    "/webhooks/videosdk",
    response_model=WebhookAccepted,
    openapi_extra=_REQUEST_BODY_DOC,
    summary="Receive a VideoSDK webhook",
    responses={
        code: {**entry, "description": description}
        for (code, entry), description in zip(
            documented_errors(400, 401, 413, 415, 422, 503).items(),
            (
                "Malformed JSON, or no string webhookType",
                "Missing or invalid signature",
                "Body larger than MAX_BODY_BYTES",
                "Content-Type is not JSON",
                "A track-recording webhook that fails validation",
                "Database or public key unavailable; retry after Retry-After",
            ),
            strict=True,
        )
    },
)
async def receive_webhook(request: Request) -> FastJSONResponse:
    # No FastAPI dependencies on the hot path: solving them was ~9% of a saturated worker.
    intake = get_intake(request)
    content_type = request.headers.get("content-type")
    if content_type is not None and not _is_json_media_type(content_type):
        raise UnsupportedMediaType(f"Content-Type must be application/json, not {content_type!r}")
    body = await read_limited_body(request)
    result = await intake.receive(body, request.headers.getlist(SIGNATURE_HEADER))
    accepted: WebhookAccepted = {
        "status": result.outcome,
        "eventId": str(result.event_id),
        "recordingId": None if result.recording_id is None else str(result.recording_id),
    }
    return FastJSONResponse(accepted)


@events_router.get("", response_model=Page[WebhookEventDocument])
async def list_webhook_events(
    session: ReadSessionDep,
    sessionId: FilterValue = None,
    webhookType: Annotated[list[WebhookTypeFilter] | None, Query()] = None,
    outcome: Annotated[list[Outcome] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> FastJSONResponse:
    filters = repository.EventFilter(
        session_id=sessionId,
        webhook_types=list(webhookType or ()),
        outcomes=[o.value for o in outcome or ()],
    )
    before = decode_id_cursor(cursor) if cursor else None
    rows = await repository.list_page(session, filters, limit + 1, before)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["id"])
    return page_response([webhook_event_document(row) for row in rows], next_cursor)
