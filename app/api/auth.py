"""Bearer-token checks: the query API's (`API_TOKENS`), and the one `/metrics` uses with its
own token."""

from __future__ import annotations

import hmac

from fastapi import Request

from app.api.deps import settings_of
from app.core.config import ApiAuth
from app.core.errors import Unauthorized


def token_matches(presented: str, tokens: list[str]) -> bool:
    """Constant time per token, and every token is compared, so timing tells nothing."""
    presented_bytes = presented.encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(presented_bytes, token.encode())
    return matched


def require_bearer(request: Request, tokens: list[str], name: str = "token") -> None:
    """The request's `Authorization: Bearer` must be one of `tokens`; else a 401
    (`missing_token` or `invalid_token`)."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise Unauthorized(
            f"send 'Authorization: Bearer <{name}>'",
            error="missing_token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not token_matches(credentials.strip(), tokens):
        raise Unauthorized(
            "the bearer token is not valid",
            error="invalid_token",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def require_api_token(request: Request) -> None:
    settings = settings_of(request)
    if settings.api_auth is ApiAuth.OFF:
        return
    require_bearer(request, [token.get_secret_value() for token in settings.api_tokens])
