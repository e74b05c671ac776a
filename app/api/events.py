"""`/v1/webhook-events`: the raw log, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AfterValidator, StringConstraints

from app.api.auth import require_api_token
from app.api.cursors import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Page,
    decode_id_cursor,
    encode_cursor,
    page_response,
)
from app.api.deps import ledger_of
from app.api.documents import WebhookEventDocument, webhook_event_document
from app.api.params import FilterValue
from app.core.http import FastJSONResponse, documented_errors
from app.core.text import reject_nul
from app.ledger import queries
from app.rules.lifecycle import Outcome
from app.videosdk.schemas import WEBHOOK_TYPE_MAX_LENGTH

WebhookTypeFilter = Annotated[
    str,
    StringConstraints(min_length=1, max_length=WEBHOOK_TYPE_MAX_LENGTH),
    AfterValidator(reject_nul),
]

router = APIRouter(
    prefix="/v1/webhook-events",
    tags=["webhook events"],
    dependencies=[Depends(require_api_token)],
    responses=documented_errors(401, 422, 503),
)


@router.get("", response_model=Page[WebhookEventDocument])
async def list_webhook_events(
    request: Request,
    sessionId: FilterValue = None,
    webhookType: Annotated[list[WebhookTypeFilter] | None, Query()] = None,
    outcome: Annotated[list[Outcome] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> FastJSONResponse:
    filters = queries.EventFilter(
        session_id=sessionId,
        webhook_types=list(webhookType or ()),
        outcomes=[o.value for o in outcome or ()],
    )
    before = decode_id_cursor(cursor) if cursor else None
    async with ledger_of(request).reader() as reader:
        page = await queries.list_events(reader, filters, limit, before)
    next_cursor = encode_cursor(page.items[-1].id) if page.more else None
    return page_response([webhook_event_document(row) for row in page.items], next_cursor)
