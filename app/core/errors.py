"""The service's exceptions: each carries its HTTP status and a stable `error` code.

No framework here, so every layer can raise them; `app.core.http` renders them as
`{"error": <code>, "detail": ...}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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
    """Cannot be done now; the caller should retry (rendered with `Retry-After`)."""

    status_code = 503
    error = "service_unavailable"


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
