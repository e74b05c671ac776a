"""Opaque keyset cursors and the page envelope shared by the list endpoints."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from typing import Generic, TypeVar

import orjson
from pydantic import BaseModel

from app.core.errors import FastJSONResponse, ValidationFailed
from app.core.query import as_utc

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_ID = 2**63 - 1


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """The page envelope as documented; `page_response` renders it."""

    items: list[T]
    nextCursor: str | None


def page_response(items: Sequence[object], next_cursor: str | None) -> FastJSONResponse:
    return FastJSONResponse({"items": items, "nextCursor": next_cursor})


def encode_cursor(*position: str | int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(position))).decode().rstrip("=")


def _decode(cursor: str) -> list[object]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = orjson.loads(raw)
    except (binascii.Error, ValueError):
        value = None
    if not isinstance(value, list):
        raise _bad_cursor()
    return value


def _bad_cursor() -> ValidationFailed:
    return ValidationFailed(
        [{"field": "query.cursor", "message": "not a cursor from this API", "type": "cursor"}]
    )


def decode_time_cursor(cursor: str) -> tuple[datetime, int]:
    position = _decode(cursor)
    try:
        stamp, ident = position
        if not isinstance(stamp, str) or not isinstance(ident, int) or not 0 < ident <= MAX_ID:
            raise ValueError
        moment = datetime.fromisoformat(stamp)
        if moment.tzinfo is None:
            raise ValueError
        return as_utc(moment), ident
    except ValueError:
        raise _bad_cursor() from None


def decode_id_cursor(cursor: str) -> int:
    position = _decode(cursor)
    if len(position) != 1 or not isinstance(position[0], int) or not 0 < position[0] <= MAX_ID:
        raise _bad_cursor()
    return position[0]
