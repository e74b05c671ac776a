"""What the rest of trackhook reads from a VideoSDK webhook document: its fingerprint, the
ids it names, and, for a valid track webhook, its track and lifecycle event."""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from app.core.jsontext import json_bytes, with_deep_recursion
from app.core.text import ID_MAX_LENGTH
from app.rules.lifecycle import TrackEvent, TrackKey
from app.videosdk.schemas import TRACK_WEBHOOK_TYPES, TrackWebhook


@dataclass(frozen=True, slots=True)
class EventIdentity:
    """The ids a delivery names, as far as they are usable strings."""

    meeting_id: str | None = None
    session_id: str | None = None
    participant_id: str | None = None
    kind: str | None = None


def fingerprint_of(document: dict[str, Any], raw: bytes | None = None) -> str:
    """Equal for exact repeats of a delivery, whatever the key order or spacing, and for
    numbers that are equal (`1` and `1.0`); never for numbers that differ, however many
    digits they have. `raw` is the body as received, for its numbers' exact values (the
    parsed document keeps at most 17 significant digits of a non-integer or of an integer
    beyond 64 bits); without it the document's own values are used."""
    return hashlib.sha256(canonical_json(document, raw)).hexdigest()


def canonical_json(document: dict[str, Any], raw: bytes | None = None) -> bytes:
    """Sorted keys, no spaces, numbers in one form. Most deliveries have no number a
    64-bit integer cannot hold, and their canonical form is orjson's (as before)."""
    if raw is None or _exact_as_parsed(document):
        with contextlib.suppress(orjson.JSONEncodeError):  # too deep for orjson: below
            return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    source = (
        document
        if raw is None
        else with_deep_recursion(json.loads, raw, parse_float=Decimal, parse_int=Decimal)
    )
    canonical = with_deep_recursion(_canonical_numbers, source)
    return json_bytes(canonical, sort_keys=True)


def document_text(value: object) -> str:
    """The compact JSON text of a document, however deeply nested."""
    return json_bytes(value).decode()


# A number no JSON number of ours can be confused with: a string no sender writes.
_NUMBER_MARK = "\u0001number:"
_INT_RANGE = range(-(2**63), 2**64)


def _exact_as_parsed(document: object) -> bool:
    """No float anywhere: orjson parsed every number exactly (it makes a float of any
    number with a fraction or an exponent, and of an integer beyond 64 bits)."""
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, float):
            return False
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return True


def _canonical_numbers(node: object) -> object:
    """The same document, each number as an int when it is an integer a 64-bit integer
    holds (so `1.0` becomes `1`), otherwise as its marked, normalised decimal text."""
    if isinstance(node, Decimal | int | float) and not isinstance(node, bool):
        number = Decimal(node) if not isinstance(node, Decimal) else node
        if number.is_finite() and number.adjusted() < 20 and number == number.to_integral_value():
            if (whole := int(number)) in _INT_RANGE:
                return whole
        # Trailing zeros moved into the exponent, by hand: Decimal.normalize() would round
        # to its context's 28 digits and make two long numbers one.
        sign, digit_tuple, exponent = number.as_tuple()
        assert isinstance(exponent, int)  # finite: JSON has no NaN or infinity
        digits = "".join(map(str, digit_tuple)).lstrip("0") or "0"
        significant = digits.rstrip("0") or "0"
        exponent += len(digits) - len(significant)
        return f"{_NUMBER_MARK}{'-' if sign and significant != '0' else ''}{significant}e{exponent}"
    if isinstance(node, dict):
        return {key: _canonical_numbers(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_canonical_numbers(item) for item in node]
    return node


def identity_of(document: dict[str, Any]) -> EventIdentity:
    data = document.get("data")
    if not isinstance(data, dict):
        return EventIdentity()
    get = data.get
    return EventIdentity(
        _usable(get("meetingId")),
        _usable(get("sessionId")),
        _usable(get("participantId")),
        _usable(get("kind")),
    )


def _usable(value: object) -> str | None:
    """An id as far as it is a usable string: not empty, not too long, no NUL."""
    if isinstance(value, str) and 0 < len(value) <= ID_MAX_LENGTH and "\x00" not in value:
        return value
    return None


def track_key_of(webhook: TrackWebhook) -> TrackKey:
    return TrackKey(webhook.data.sessionId, webhook.data.participantId, webhook.data.kind)


def track_event_of(webhook: TrackWebhook, fingerprint: str, received_at: datetime) -> TrackEvent:
    """The lifecycle's view of a validated webhook (intake and rebuild both use this)."""
    return TrackEvent(
        status=TRACK_WEBHOOK_TYPES[webhook.webhookType],
        fingerprint=fingerprint,
        received_at=received_at,
        files=tuple(entry.model_dump() for entry in webhook.data.fileDetails or ()),
        meeting_id=webhook.data.meetingId,
    )
