"""`POST /webhooks/videosdk` (intake) and `GET /v1/webhook-events` (the raw log)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AfterValidator, StringConstraints

from app.core.auth import require_api_token
from app.core.errors import FastJSONResponse, documented_errors
from app.core.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Page,
    decode_id_cursor,
    encode_cursor,
    page_response,
)
from app.core.query import FilterValue
from app.core.reader import open_reader
from app.core.text import reject_nul
from app.recordings.lifecycle import Outcome
from app.webhooks import repository
from app.webhooks.intake_lane import SIGNATURE_HEADER
from app.webhooks.models import WEBHOOK_TYPE_MAX_LENGTH
from app.webhooks.schemas import (
    WebhookAccepted,
    WebhookEventDocument,
    track_webhook_adapter,
    webhook_event_document,
)

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
async def receive_webhook() -> WebhookAccepted:
    # A declaration for the OpenAPI document and for FastAPI's 405 on other methods:
    # POST requests to this path are answered by IntakeLane before routing.
    raise RuntimeError("POST /webhooks/videosdk is served by app.webhooks.intake_lane")


@events_router.get("", response_model=Page[WebhookEventDocument])
async def list_webhook_events(
    request: Request,
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
    async with open_reader(request) as reader:
        rows = await repository.list_page(reader, filters, limit + 1, before)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["id"])
    return page_response([webhook_event_document(row) for row in rows], next_cursor)
