"""`POST /webhooks/videosdk` as FastAPI sees it: a declaration for the OpenAPI document,
and so that other methods on the path get FastAPI's 405. POST requests are answered by
`IntakeLane` (lane.py) before routing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.core.http import documented_errors
from app.intake.documents import WebhookAccepted
from app.intake.lane import INTAKE_PATH, SIGNATURE_HEADER
from app.videosdk.schemas import track_webhook_adapter

router = APIRouter(tags=["webhooks"])

# The body is read raw (the signature covers the bytes), so its schema is documented by
# hand; the models it refers to are added to the document's components (`add_to_openapi`).
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


@router.post(
    INTAKE_PATH,
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
    raise RuntimeError("POST /webhooks/videosdk is served by app.intake.lane")
