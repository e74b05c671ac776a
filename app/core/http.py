"""HTTP rendering shared by the intake lane and the API: one error shape for everything,
`{"error": <stable code>, "detail": ...}`, and orjson for every JSON answer."""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core import metrics
from app.core.config import DEFAULT_RETRY_AFTER, Settings
from app.core.errors import AppError, ServiceUnavailable, ValidationFailed, field_errors
from app.core.jsontext import json_bytes

logger = logging.getLogger(__name__)


class FastJSONResponse(JSONResponse):
    """orjson rendering; aware UTC datetimes come out as ISO-8601 with a "Z"."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


class ErrorBody(BaseModel):
    error: str
    detail: str


class FieldProblem(BaseModel):
    field: str
    message: str
    type: str


class ValidationErrorBody(BaseModel):
    error: Literal["validation_failed"]
    detail: list[FieldProblem]


# A value the caller sent, quoted in an error's detail, is cut to this many characters: an
# answer never grows with what was sent.
ECHO_MAX_CHARS = 64


def echoed(value: str) -> str:
    """`value` quoted for an error's detail, cut to ECHO_MAX_CHARS."""
    if len(value) <= ECHO_MAX_CHARS:
        return repr(value)
    return f"{value[:ECHO_MAX_CHARS]!r}... ({len(value)} characters)"


def documented_errors(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for our error statuses, so the schema shows the real error shape."""
    return {
        code: {"model": ValidationErrorBody if code == 422 else ErrorBody} for code in status_codes
    }


def error_document(error: str, detail: object) -> dict[str, object]:
    return {"error": error, "detail": detail}


def error_response(
    status_code: int, error: str, detail: object, headers: dict[str, str] | None = None
) -> FastJSONResponse:
    """Every error answer of the service is made here, so every 503 is counted here, by its
    cause."""
    if status_code == 503:
        metrics.UNAVAILABLE.labels(error).inc()
    return FastJSONResponse(error_document(error, detail), status_code=status_code, headers=headers)


def response_for_exception(
    exc: Exception, retry_after_seconds: int, log_unexpected: bool = True
) -> FastJSONResponse:
    """The answer to any exception a request raised (the handlers and the intake lane).

    The layers below raise `AppError`s (the ledger turns every database fault into one);
    anything else is a bug: a 500, logged with its traceback."""
    if isinstance(exc, AppError):
        headers = dict(exc.headers or {})
        if isinstance(exc, ServiceUnavailable):
            headers.setdefault("Retry-After", str(retry_after_seconds))
        return error_response(exc.status_code, exc.error, exc.detail, headers or None)
    if log_unexpected:
        logger.error("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "an unexpected error occurred")


def retry_after_seconds(app: object) -> int:
    """RETRY_AFTER_SECONDS of the settings the app started with."""
    settings = getattr(getattr(app, "state", None), "settings", None)
    return settings.retry_after_seconds if isinstance(settings, Settings) else DEFAULT_RETRY_AFTER


def _retry_after(request: Request) -> int:
    return retry_after_seconds(request.app)


def install_error_handlers(app: FastAPI) -> None:
    async def on_validation_error(_request: Request, exc: Exception) -> FastJSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, ValidationFailed.error, field_errors(exc.errors()))

    async def on_http_error(_request: Request, exc: Exception) -> FastJSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(
            exc.status_code,
            codes.get(exc.status_code, "http_error"),
            exc.detail,
            dict(exc.headers) if exc.headers else None,
        )

    async def on_app_error(request: Request, exc: Exception) -> FastJSONResponse:
        return response_for_exception(exc, _retry_after(request))

    async def on_unexpected(request: Request, exc: Exception) -> FastJSONResponse:
        # Starlette's server-error middleware sends this, then re-raises: the server logs
        # the traceback, so it is not logged twice.
        return response_for_exception(exc, _retry_after(request), log_unexpected=False)

    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(Exception, on_unexpected)
