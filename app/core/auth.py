"""Bearer-token check for the query API (`API_TOKENS`)."""

from __future__ import annotations

import hmac

from fastapi import Request

from app.core.context import get_context
from app.core.errors import Unauthorized


def token_matches(presented: str, tokens: list[str]) -> bool:
    """Constant time per token, and every token is compared, so timing tells nothing."""
    presented_bytes = presented.encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(presented_bytes, token.encode())
    return matched


async def require_api_token(request: Request) -> None:
    tokens = [token.get_secret_value() for token in get_context(request).settings.api_tokens]
    if not tokens:
        return
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise Unauthorized(
            "send 'Authorization: Bearer <token>'",
            error="missing_token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not token_matches(credentials.strip(), tokens):
        raise Unauthorized(
            "the bearer token is not valid",
            error="invalid_token",
            headers={"WWW-Authenticate": "Bearer"},
        )
