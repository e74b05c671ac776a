"""Opaque keyset cursors and the page envelope shared by the list endpoints."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from typing import Generic, TypeGuard, TypeVar

import orjson
from pydantic import BaseModel

from app.api.params import as_utc
from app.core.errors import ValidationFailed
from app.core.http import FastJSONResponse

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


FEED_TAG = "changes"


def encode_feed_cursor(txn: int, ident: int) -> str:
    return encode_cursor(FEED_TAG, txn, ident)


def _is_position(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


def decode_feed_cursor(cursor: str, field: str = "query.cursor") -> tuple[int, int]:
    """A change-feed position this API made; 422 naming `field` for anything else."""
    try:
        position = _decode(cursor)
    except ValidationFailed:
        position = []
    if len(position) == 3 and position[0] == FEED_TAG:
        txn, ident = position[1], position[2]
        if _is_position(txn) and _is_position(ident):
            return txn, ident
    raise ValidationFailed(
        [{"field": field, "message": "not a change-feed cursor from this API", "type": "cursor"}]
    )
