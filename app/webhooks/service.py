"""Webhook intake: verify, parse, classify, then apply and log in one transaction."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.config import SignatureMode
from app.core.db import driver_connection, utcnow
from app.core.errors import (
    BadRequest,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
    field_errors,
)
from app.core.text import ID_MAX_LENGTH
from app.recordings import repository as recordings
from app.recordings.lifecycle import Outcome, TrackEvent, transition
from app.recordings.repository import TrackKey, state_from_row
from app.webhooks import pg_fast_path
from app.webhooks import repository as events
from app.webhooks.models import WEBHOOK_TYPE_MAX_LENGTH
from app.webhooks.pg_group_commit import GroupCommitter
from app.webhooks.public_key import PublicKeyProvider, PublicKeyUnavailable
from app.webhooks.repository import EventIdentity, TrackDelivery
from app.webhooks.schemas import TRACK_WEBHOOK_TYPES, TrackWebhook, track_webhook_adapter
from app.webhooks.signature import SignatureError, compact_json, decode_signature, verify

logger = logging.getLogger(__name__)

# The locked path goes round again only when another delivery for the key committed
# in between (it created the first recording, or opened the next one while we waited
# for the lock), so each pass is progress; the bound only guards against a bug.
MAX_APPLY_ATTEMPTS = 50
# Optimistic tries on PostgreSQL before taking the row lock: under contention for one
# key the locked path queues writers fairly instead of letting them retry in a storm.
FAST_PATH_ATTEMPTS = 2


@dataclass(frozen=True, slots=True)
class IntakeResult:
    outcome: Outcome
    event_id: int
    recording_id: int | None


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


def fingerprint_of(document: dict[str, Any]) -> str:
    """Equal for exact repeats of a delivery, whatever the key order or spacing."""
    try:
        canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        # Only nesting deeper than orjson's 254 levels gets here; such a body can be
        # neither fingerprinted nor stored as JSON.
        raise BadRequest(
            "the JSON is nested more than 254 levels deep", error="invalid_json"
        ) from None
    return hashlib.sha256(canonical).hexdigest()


def identity_of(document: dict[str, Any]) -> EventIdentity:
    data = document.get("data")
    if not isinstance(data, dict):
        return EventIdentity()

    def usable(name: str) -> str | None:
        value = data.get(name)
        ok = isinstance(value, str) and 0 < len(value) <= ID_MAX_LENGTH and "\x00" not in value
        return value if ok else None

    return EventIdentity(
        meeting_id=usable("meetingId"),
        session_id=usable("sessionId"),
        participant_id=usable("participantId"),
        kind=usable("kind"),
    )


def track_key_of(webhook: TrackWebhook) -> TrackKey:
    return TrackKey(webhook.data.sessionId, webhook.data.participantId, webhook.data.kind)


def track_event_of(webhook: TrackWebhook, fingerprint: str, received_at: datetime) -> TrackEvent:
    """The lifecycle's view of a validated webhook (intake and rebuild both use this)."""
    return TrackEvent(
        status=TRACK_WEBHOOK_TYPES[webhook.webhookType],
        fingerprint=fingerprint,
        received_at=received_at,
        files=tuple(entry.model_dump() for entry in webhook.data.fileDetails or ()),
    )


class WebhookIntake:
    def __init__(
        self,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        key_provider: PublicKeyProvider,
        signature_mode: SignatureMode,
        retry_after_seconds: int,
        group_commit: GroupCommitter | None = None,
    ) -> None:
        self._group_commit = group_commit
        self._engine = engine
        self._fast_path = engine.dialect.name == "postgresql"
        self._sessions = sessions
        self._keys = key_provider
        self._verify_signatures = signature_mode is SignatureMode.REQUIRED
        self._retry_after = retry_after_seconds

    async def receive(self, raw: bytes, signatures: Sequence[str]) -> IntakeResult:
        received_at = utcnow()
        body = _Body(raw)
        if self._verify_signatures:
            await self._check_signature(body, signatures)
        document = body.document()
        if not isinstance(document, dict):
            raise BadRequest("the body must be a JSON object", error="invalid_webhook")
        webhook_type = document.get("webhookType")
        if not isinstance(webhook_type, str) or not webhook_type:
            raise BadRequest(
                "the body must have a non-empty string field 'webhookType'",
                error="invalid_webhook",
            )
        if len(webhook_type) > WEBHOOK_TYPE_MAX_LENGTH or "\x00" in webhook_type:
            raise BadRequest(
                f"'webhookType' must be at most {WEBHOOK_TYPE_MAX_LENGTH} characters, no NUL",
                error="invalid_webhook",
            )
        fingerprint = fingerprint_of(document)
        if webhook_type not in TRACK_WEBHOOK_TYPES:
            return await self._log_only(
                received_at, webhook_type, document, fingerprint, Outcome.IGNORED, None
            )
        try:
            webhook = track_webhook_adapter.validate_python(document)
        except ValidationError as exc:
            # loc starts with the union tag (the webhook type); drop it.
            problems = field_errors(exc.errors(), drop_prefix=1)
            await self._log_only(
                received_at, webhook_type, document, fingerprint, Outcome.REJECTED, problems
            )
            raise ValidationFailed(problems) from None
        return await self._apply(received_at, webhook, document, fingerprint)

    async def _check_signature(self, body: _Body, signatures: Sequence[str]) -> None:
        if not signatures:
            raise Unauthorized(
                "the videosdk-signature header is missing", error="signature_missing"
            )
        if len(signatures) > 1:
            raise Unauthorized("more than one videosdk-signature header", error="signature_invalid")
        try:
            key = await self._keys.get()
        except PublicKeyUnavailable as exc:
            raise ServiceUnavailable(
                str(exc), error="public_key_unavailable", retry_after=self._retry_after
            ) from None
        try:
            signature = decode_signature(signatures[0], key)
            verify(key, signature, self._signed_candidates(body))
        except SignatureError as exc:
            raise Unauthorized(str(exc), error="signature_invalid") from None

    @staticmethod
    def _signed_candidates(body: _Body) -> Any:
        yield body.raw
        try:
            document = body.document()
        except BadRequest:
            return
        compact = compact_json(document)
        if compact is not None and compact != body.raw:
            yield compact

    async def _log_only(
        self,
        received_at: datetime,
        webhook_type: str,
        document: dict[str, Any],
        fingerprint: str,
        outcome: Outcome,
        error: list[dict[str, str]] | None,
    ) -> IntakeResult:
        async with self._sessions() as session, session.begin():
            event_id = await events.append(
                session,
                received_at=received_at,
                webhook_type=webhook_type,
                identity=identity_of(document),
                outcome=outcome,
                fingerprint=fingerprint,
                payload=document,
                error=error,
            )
        return IntakeResult(outcome, event_id, None)

    async def _apply(
        self,
        received_at: datetime,
        webhook: TrackWebhook,
        document: dict[str, Any],
        fingerprint: str,
    ) -> IntakeResult:
        data = webhook.data
        delivery = TrackDelivery(
            key=track_key_of(webhook),
            event=track_event_of(webhook, fingerprint, received_at),
            identity=EventIdentity(data.meetingId, data.sessionId, data.participantId, data.kind),
            meeting_id=data.meetingId,
            webhook_type=webhook.webhookType,
            payload=document,
        )
        if self._group_commit is not None:
            grouped = await self._group_commit.apply(delivery)
            if grouped is not None:
                return IntakeResult(grouped.outcome, grouped.event_id, grouped.recording_id)
        if self._fast_path:
            result = await self._apply_unlocked(delivery)
            if result is not None:
                return result
        return await self._apply_locked(delivery)

    async def _apply_unlocked(self, delivery: TrackDelivery) -> IntakeResult | None:
        """PostgreSQL: decide on an unlocked read, write with one version-checked statement."""
        payload_json = orjson.dumps(delivery.payload).decode()
        async with driver_connection(self._engine) as driver:
            for _attempt in range(FAST_PATH_ATTEMPTS):
                record = await driver.fetchrow(
                    pg_fast_path.READ_LATEST, *pg_fast_path.key_params(delivery.key)
                )
                latest = pg_fast_path.latest_from_row(record) if record else None
                step = transition(latest.state if latest else None, delivery.event)
                statement, params = pg_fast_path.write_plan(latest, step, delivery, payload_json)
                written = await driver.fetchrow(statement, *params)
                if written is not None:
                    return IntakeResult(step.outcome, written["id"], written["recording_id"])
        return None

    async def _apply_locked(self, delivery: TrackDelivery) -> IntakeResult:
        """Any database: lock the key's latest recording, decide, write, commit."""
        key, event = delivery.key, delivery.event
        async with self._sessions() as session, session.begin():
            for _attempt in range(MAX_APPLY_ATTEMPTS):
                row = await recordings.lock_latest(session, key)
                step = transition(state_from_row(row) if row else None, event)
                recording_id: int | None
                if not step.opened:
                    assert row is not None
                    recording_id = row.id
                    if step.outcome is Outcome.APPLIED:
                        await recordings.save_state(session, recording_id, step.recording)
                elif row is None:
                    recording_id = await recordings.insert_first(
                        session, key, delivery.meeting_id, step.recording
                    )
                    if recording_id is None:
                        continue  # a concurrent delivery created it; lock that row instead
                else:
                    recording_id = await recordings.insert_next(session, row, step.recording)
                event_id = await events.append(
                    session,
                    received_at=event.received_at,
                    webhook_type=delivery.webhook_type,
                    identity=delivery.identity,
                    outcome=step.outcome,
                    fingerprint=event.fingerprint,
                    payload=delivery.payload,
                    recording_id=recording_id,
                )
                return IntakeResult(step.outcome, event_id, recording_id)
        raise ServiceUnavailable(
            "the recording is being changed concurrently; retry",
            error="conflict_retry",
            retry_after=self._retry_after,
        )
