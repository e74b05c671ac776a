"""Webhook intake: verify, parse, classify, then hand the delivery to the ledger."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import orjson
from pydantic import ValidationError

from app.core import metrics
from app.core.config import Settings, SignatureMode
from app.core.errors import (
    BadRequest,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
    field_errors,
)
from app.intake.public_key import PublicKeyProvider, PublicKeyUnavailable
from app.intake.signature import SignatureError, signed_candidates
from app.ledger.ledger import Ledger
from app.ledger.plan import Delivery
from app.ledger.seam import Committed
from app.rules.lifecycle import Outcome, TrackEvent, TrackKey
from app.videosdk.documents import (
    fingerprint_of,
    identity_of,
    track_event_of,
    track_key_of,
)
from app.videosdk.schemas import (
    MAX_FILES,
    TRACK_WEBHOOK_TYPES,
    WEBHOOK_TYPE_MAX_LENGTH,
    type_field,
    validate_track_webhook,
)

# Why a signature is refused (SignatureError.reason and the checks below), each bound once:
# every series exists from the start, at 0.
SIGNATURE_FAILURE_REASONS = (
    "missing",
    "multiple",
    "undecodable",
    "wrong_length",
    "no_key_verifies",
    "key_unavailable",
)
_SIGNATURE_FAILED = {
    reason: metrics.SIGNATURE_FAILURES.labels(reason) for reason in SIGNATURE_FAILURE_REASONS
}


class DeliveryRejected(ValidationFailed):
    """A track webhook whose fields are invalid: logged as rejected, answered 422."""

    def __init__(self, committed: Committed) -> None:
        super().__init__(committed.delivery.problems)
        self.committed = committed


class _Body:
    """The raw body, parsed at most once (signature fallback and intake both need it)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._document: object = None
        self._error: str | None = None
        self._parsed = False

    def document(self) -> object:
        if not self._parsed:
            self._parsed = True
            try:
                self._document = orjson.loads(self.raw)
            except orjson.JSONDecodeError as exc:
                self._error = str(exc)
        if self._error is not None:
            raise BadRequest(f"the body is not valid JSON: {self._error}", error="invalid_json")
        return self._document


class WebhookIntake:
    def __init__(self, ledger: Ledger, key_provider: PublicKeyProvider, settings: Settings) -> None:
        self._ledger = ledger
        self._keys = key_provider
        self._verify_signatures = settings.webhook_signature is SignatureMode.REQUIRED
        self.max_body_bytes = settings.max_body_bytes
        self._max_files_per_delivery = settings.max_files_per_delivery
        self.retry_after_seconds = settings.retry_after_seconds

    async def receive(self, raw: bytes, signatures: Sequence[str]) -> Committed:
        received_at = datetime.now(UTC)
        body = _Body(raw)
        if self._verify_signatures:
            await self._check_signature(body, signatures)
        signature = signatures[0] if len(signatures) == 1 else None
        delivery = classify(
            body.document(), received_at, body.raw, signature, self._max_files_per_delivery
        )
        committed = await self._ledger.record(delivery)
        if committed.outcome is Outcome.REJECTED:  # logged, and answered 422
            raise DeliveryRejected(committed)
        return committed

    async def _check_signature(self, body: _Body, signatures: Sequence[str]) -> None:
        if not signatures:
            _SIGNATURE_FAILED["missing"].inc()
            raise Unauthorized(
                "the videosdk-signature header is missing", error="signature_missing"
            )
        if len(signatures) > 1:
            _SIGNATURE_FAILED["multiple"].inc()
            raise Unauthorized("more than one videosdk-signature header", error="signature_invalid")
        try:
            await self._keys.verify(signatures[0], lambda: _signed_candidates(body))
        except PublicKeyUnavailable as exc:
            _SIGNATURE_FAILED["key_unavailable"].inc()
            raise ServiceUnavailable(str(exc), error="public_key_unavailable") from None
        except SignatureError as exc:
            _SIGNATURE_FAILED[exc.reason].inc()
            raise Unauthorized(str(exc), error="signature_invalid") from None


def _signed_candidates(body: _Body) -> Iterator[bytes]:
    try:
        document = body.document()
    except BadRequest:  # not JSON: only the bytes themselves can be signed
        yield body.raw
        return
    yield from signed_candidates(body.raw, document)


def classify(
    document: object,
    received_at: datetime,
    raw: bytes,
    signature: str | None = None,
    max_files: int = MAX_FILES,
) -> Delivery:
    """What a verified, parsed body is to the ledger: an ignored type, a rejected track
    webhook (its field errors), or a track event. A body that is not a webhook at all is a
    400 and is not logged."""
    if not isinstance(document, dict):
        raise BadRequest("the body must be a JSON object", error="invalid_webhook")
    field = type_field(document)
    webhook_type = document.get(field)
    if not isinstance(webhook_type, str) or not webhook_type:
        raise BadRequest(
            "the body must have a non-empty string field 'webhookType' (or 'type')",
            error="invalid_webhook",
        )
    if len(webhook_type) > WEBHOOK_TYPE_MAX_LENGTH or "\x00" in webhook_type:
        raise BadRequest(
            f"'{field}' must be at most {WEBHOOK_TYPE_MAX_LENGTH} characters, no NUL",
            error="invalid_webhook",
        )
    fingerprint = fingerprint_of(document, raw)
    track, event, problems = None, None, None
    if webhook_type in TRACK_WEBHOOK_TYPES:
        track, event, problems = _track_fields(document, fingerprint, received_at, max_files)
    # The payload is logged as received, whichever field named the type.
    return Delivery(
        received_at=received_at,
        webhook_type=webhook_type,
        identity=identity_of(document),
        fingerprint=fingerprint,
        payload=document,
        body=raw,
        signature=signature,
        track=track,
        event=event,
        problems=problems,
    )


_TrackFields = tuple[TrackKey | None, TrackEvent | None, list[dict[str, str]] | None]


def _track_fields(
    document: dict[str, object], fingerprint: str, received_at: datetime, max_files: int
) -> _TrackFields:
    """A track webhook's key and lifecycle event, or its field errors."""
    try:
        webhook = validate_track_webhook(document)
    except ValidationError as exc:
        # loc starts with the union tag (the webhook type); drop it.
        return None, None, field_errors(exc.errors(), drop_prefix=1)
    if len(webhook.data.fileDetails or ()) > max_files:
        problem = {
            "field": "data.fileDetails",
            "message": f"more than {max_files} files in one delivery (MAX_FILES_PER_DELIVERY)",
            "type": "too_many_files",
        }
        return None, None, [problem]
    return track_key_of(webhook), track_event_of(webhook, fingerprint, received_at), None
