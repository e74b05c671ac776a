"""`POST /webhooks/videosdk` served as plain ASGI, ahead of FastAPI's routing.

The intake is the hot path, and a saturated worker spent about a third of its CPU in the
framework around it (route matching, request/response wrappers, dependency solving,
query-string parsing) for an endpoint that needs none of it: it reads the raw bytes
(the signature covers them) and answers a small JSON document. So `IntakeLane`, an ASGI
middleware, answers that one method and path itself; every other request goes on to
FastAPI. The route stays declared in `router.py` for the OpenAPI document and so that
other methods get FastAPI's 405.

Errors come out exactly as the exception handlers render them (`response_for_exception`).
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.context import AppContext
from app.core.errors import (
    BadRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    response_for_exception,
)
from app.webhooks.schemas import WebhookAccepted
from app.webhooks.service import WebhookIntake

INTAKE_PATH = "/webhooks/videosdk"
SIGNATURE_HEADER = "videosdk-signature"
_SIGNATURE_HEADER_BYTES = SIGNATURE_HEADER.encode()
_JSON_HEADERS = [(b"content-type", b"application/json")]


class ClientGone(Exception):
    """The client disconnected before its body arrived: there is nobody to answer."""


def is_json_media_type(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def route_path(scope: Scope) -> str:
    """The path as the routes see it: behind a proxy (`--root-path /x`) the server passes
    the full path, root path included, and routing matches what follows it."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path) and path[len(root_path) :][:1] in ("", "/"):
        return path[len(root_path) :]
    return path


class IntakeLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or route_path(scope) != INTAKE_PATH:
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        context: AppContext = state.context
        intake: WebhookIntake = state.intake
        try:
            document = await self._receive_webhook(scope, receive, context, intake)
        except ClientGone:
            return
        except Exception as exc:  # every failure is answered like the exception handlers do
            response = response_for_exception(exc, context.settings.retry_after_seconds)
            await response(scope, receive, send)
            return
        body = orjson.dumps(document)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _receive_webhook(
        scope: Scope, receive: Receive, context: AppContext, intake: WebhookIntake
    ) -> WebhookAccepted:
        content_type: str | None = None
        content_length: str | None = None
        signatures: list[str] = []
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                content_length = value.decode("latin-1")
            elif name == _SIGNATURE_HEADER_BYTES:
                signatures.append(value.decode("latin-1"))
        if content_type is not None and not is_json_media_type(content_type):
            raise UnsupportedMediaType(
                f"Content-Type must be application/json, not {content_type!r}"
            )
        raw = await read_limited_body(receive, content_length, context.settings.max_body_bytes)
        result = await intake.receive(raw, signatures)
        return {
            "status": result.outcome,
            "eventId": str(result.event_id),
            "recordingId": None if result.recording_id is None else str(result.recording_id),
        }


async def read_limited_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it passes `limit` (chunked too)."""
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise BadRequest("Content-Length is not a number", error="bad_content_length")
        # More digits than the limit has means larger than the limit (and int() stays cheap).
        if len(declared.lstrip("0")) > len(str(limit)) or int(declared) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
