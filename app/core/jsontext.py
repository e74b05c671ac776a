"""Compact JSON text of anything the service writes, however deeply nested.

orjson writes up to 254 levels (it parses up to 1,024); a deeper document, which intake
accepts and logs, is written by the standard library, whose recursion limit is raised for
it once. The same text either way: compact separators, non-ASCII kept, UTC times with a Z.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

import orjson

T = TypeVar("T")

_DEEP = 4000  # stack frames for 1,024 levels of JSON in the standard library's C code


def with_deep_recursion(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call `function` with a recursion limit that lets the standard library's json module
    go as deep as orjson parses."""
    if sys.getrecursionlimit() < _DEEP:
        sys.setrecursionlimit(_DEEP)
    return function(*args, **kwargs)


def _default(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON")


def json_bytes(value: object, sort_keys: bool = False) -> bytes:
    option = orjson.OPT_UTC_Z | (orjson.OPT_SORT_KEYS if sort_keys else 0)
    try:
        return orjson.dumps(value, option=option)
    except orjson.JSONEncodeError as exc:
        if "recursion" not in str(exc).lower():
            raise
    text: str = with_deep_recursion(
        json.dumps,
        value,
        default=_default,
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=sort_keys,
    )
    return text.encode()
