"""`POST /webhooks/videosdk` (and `/webhooks/videosdk/`) as plain ASGI, ahead of FastAPI.

The intake is the hot path, and a saturated worker spent about a third of its CPU in the
framework around it (route matching, request/response wrappers, dependency solving,
query-string parsing) for an endpoint that needs none of it: it reads the raw bytes
(the signature covers them) and answers a small JSON document. So `IntakeLane`, an ASGI
middleware, answers that one method and path itself; every other request goes on to
FastAPI. The route stays declared in `router.py` for the OpenAPI document and so that
other methods get FastAPI's 405.

Errors come out exactly as the exception handlers render them (`response_for_exception`).
Once a delivery is answered, it is counted and timed in the metrics, and gets one log line
(`answered`): the lane answers before routing, so it labels its own metrics.
"""

from __future__ import annotations

import logging
from time import perf_counter

import orjson
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import metrics
from app.core.errors import AppError, BadRequest, PayloadTooLarge, UnsupportedMediaType
from app.core.http import response_for_exception
from app.intake.documents import webhook_accepted
from app.intake.service import DeliveryRejected, WebhookIntake
from app.ledger.seam import Committed
from app.rules.lifecycle import Outcome
from app.videosdk.documents import EventIdentity
from app.videosdk.schemas import TRACK_WEBHOOK_TYPES

INTAKE_PATH = "/webhooks/videosdk"
# VideoSDK may be configured with the trailing slash; it is answered, not redirected.
INTAKE_PATHS = frozenset((INTAKE_PATH, INTAKE_PATH + "/"))
SIGNATURE_HEADER = "videosdk-signature"
_SIGNATURE_HEADER_BYTES = SIGNATURE_HEADER.encode()
_JSON_HEADERS = [(b"content-type", b"application/json")]
_NO_IDENTITY = EventIdentity()

logger = logging.getLogger("trackhook.intake")


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
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or route_path(scope) not in INTAKE_PATHS
        ):
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        intake: WebhookIntake = scope["app"].state.intake
        try:
            committed = await self._receive_webhook(scope, receive, intake)
        except ClientGone:
            return
        except Exception as exc:  # every failure is answered like the exception handlers do
            response = response_for_exception(exc, intake.retry_after_seconds)
            await response(scope, receive, send)
            answered(response.status_code, started, error=exc)
            return
        body = orjson.dumps(webhook_accepted(committed))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
        answered(200, started, committed=committed)

    @staticmethod
    async def _receive_webhook(scope: Scope, receive: Receive, intake: WebhookIntake) -> Committed:
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
        raw = await read_limited_body(receive, content_length, intake.max_body_bytes)
        return await intake.receive(raw, signatures)


# The metrics' children of each (type, outcome, status), bound once: `labels()` costs more
# than the increment. The answers of every accepted delivery are bound from the start, so
# their series exist (at 0) before the first one arrives. The labels' values are bounded:
# six types, the outcomes and error codes, the statuses the lane answers.
_Children = tuple[Counter, Histogram]
_children: dict[tuple[str, str, int], _Children] = {}


def _bind(webhook_type: str, outcome: str, status: int) -> _Children:
    children = (
        metrics.WEBHOOKS.labels(webhook_type, outcome, str(status)),
        metrics.INTAKE_SECONDS.labels(str(status)),
    )
    _children[(webhook_type, outcome, status)] = children
    return children


for _type in TRACK_WEBHOOK_TYPES:
    for _outcome in (Outcome.APPLIED, Outcome.DUPLICATE):
        _bind(_type, _outcome.value, 200)
_bind("other", Outcome.IGNORED.value, 200)


def answered(
    status: int,
    started: float,
    committed: Committed | None = None,
    error: Exception | None = None,
) -> None:
    """An answered delivery, in the metrics and (at INFO) in its log line: its type (one of
    the track-recording types, "other", or "unknown" for one not stored, whether or not its
    type was read: the error's code says why), outcome (or that code), status and duration."""
    seconds = perf_counter() - started
    if isinstance(error, DeliveryRejected):
        committed = error.committed
    if committed is not None:
        outcome: str = committed.outcome.value
        webhook_type = committed.delivery.webhook_type
        label = webhook_type if webhook_type in TRACK_WEBHOOK_TYPES else "other"
    else:
        outcome = error.error if isinstance(error, AppError) else "internal_error"
        label = "unknown"
    counter, histogram = _children.get((label, outcome, status)) or _bind(label, outcome, status)
    counter.inc()
    histogram.observe(seconds)
    if logger.isEnabledFor(logging.INFO):
        log_answered(status, seconds, outcome, committed)


def log_answered(
    status: int, seconds: float, outcome: str, committed: Committed | None = None
) -> None:
    """The line of an answered delivery: its outcome (or the error's code), type, ids and
    duration. Ids and codes only, never the body, the signature or a secret; what is not
    known (the ids of a delivery that failed before it was read) is None."""
    if committed is not None:
        delivery = committed.delivery
        identity, webhook_type = delivery.identity, delivery.webhook_type
        event_id: str | None = str(committed.event_id)
        recording_id = None if committed.recording_id is None else str(committed.recording_id)
    else:
        identity, webhook_type, event_id, recording_id = _NO_IDENTITY, None, None, None
    logger.info(
        "webhook answered",
        extra={
            "outcome": outcome,
            "status": status,
            "webhook_type": webhook_type,
            "meeting_id": identity.meeting_id,
            "session_id": identity.session_id,
            "participant_id": identity.participant_id,
            "kind": identity.kind,
            "event_id": event_id,
            "recording_id": recording_id,
            "duration_ms": round(seconds * 1000, 3),
        },
    )


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
