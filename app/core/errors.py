"""One error shape for the whole service: `{"error": <stable code>, "detail": ...}`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import (
    DBAPIError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class FastJSONResponse(JSONResponse):
    """orjson rendering; aware UTC datetimes come out as ISO-8601 with a "Z"."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_UTC_Z)


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


def documented_errors(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for our error statuses, so the schema shows the real error shape."""
    return {
        code: {"model": ValidationErrorBody if code == 422 else ErrorBody} for code in status_codes
    }


class AppError(Exception):
    status_code = 500
    error = "internal_error"

    def __init__(
        self, detail: object, *, error: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers
        if error is not None:
            self.error = error


class BadRequest(AppError):
    status_code = 400
    error = "bad_request"


class Unauthorized(AppError):
    status_code = 401
    error = "unauthorized"


class NotFound(AppError):
    status_code = 404
    error = "not_found"


class PayloadTooLarge(AppError):
    status_code = 413
    error = "payload_too_large"


class UnsupportedMediaType(AppError):
    status_code = 415
    error = "unsupported_media_type"


class ValidationFailed(AppError):
    status_code = 422
    error = "validation_failed"


class ServiceUnavailable(AppError):
    status_code = 503
    error = "service_unavailable"

    def __init__(self, detail: object, *, error: str, retry_after: int) -> None:
        super().__init__(detail, error=error, headers={"Retry-After": str(retry_after)})


def field_errors(errors: Sequence[Any], drop_prefix: int = 0) -> list[dict[str, str]]:
    """Pydantic errors as `{field, message, type}` with dotted field paths."""
    rendered = []
    for error in errors:
        location = [str(part) for part in error["loc"][drop_prefix:]]
        rendered.append(
            {
                "field": ".".join(location) or "body",
                "message": str(error["msg"]),
                "type": str(error["type"]),
            }
        )
    return rendered


class DatabaseLost(Exception):
    """A raw driver connection or the server went away mid-request (answered 503)."""


def is_schema_missing(exc: BaseException) -> bool:
    """The tables are not there: the database was never migrated."""
    if not isinstance(exc, ProgrammingError | OperationalError):
        return False
    code = getattr(exc.orig, "pgcode", None) or getattr(exc.orig, "sqlstate", None)
    return code == "42P01" or "no such table" in str(exc.orig)


def is_database_unavailable(exc: BaseException) -> bool:
    """Connection-level failures (as opposed to bugs): the caller should retry later."""
    if isinstance(exc, DatabaseLost):
        return True
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeoutError, ConnectionError)):
        return True
    if isinstance(exc, OSError | TimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def error_response(
    status_code: int, error: str, detail: object, headers: dict[str, str] | None = None
) -> FastJSONResponse:
    return FastJSONResponse(
        {"error": error, "detail": detail}, status_code=status_code, headers=headers
    )


def response_for_exception(exc: Exception, retry_after_seconds: int) -> FastJSONResponse:
    """The answer to any exception a request raised (the handlers and the intake lane)."""
    if isinstance(exc, AppError):
        return error_response(exc.status_code, exc.error, exc.detail, exc.headers)
    if is_schema_missing(exc):
        logger.error("the database schema is missing: run `trackhook migrate`")
        return error_response(
            503,
            "schema_not_migrated",
            "the database has not been migrated; retry later",
            {"Retry-After": str(retry_after_seconds)},
        )
    if is_database_unavailable(exc):
        logger.warning("database unavailable: %s", exc.__class__.__name__)
        return error_response(
            503,
            "database_unavailable",
            "the database cannot be reached; retry later",
            {"Retry-After": str(retry_after_seconds)},
        )
    logger.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "an unexpected error occurred")


def install_error_handlers(app: FastAPI, retry_after_seconds: int) -> None:
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

    async def on_exception(_request: Request, exc: Exception) -> FastJSONResponse:
        return response_for_exception(exc, retry_after_seconds)

    app.add_exception_handler(AppError, on_exception)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    # Handlers keyed on these classes run inside the exception middleware, which answers
    # without re-raising; a catch-all `Exception` handler would log every outage as a crash.
    for exc_class in (DatabaseLost, SQLAlchemyError, OSError, TimeoutError, Exception):
        app.add_exception_handler(exc_class, on_exception)
