"""The seam after commit: whatever path wrote a delivery, its committed result reaches the
listeners once, in one type, after the request has its answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import orjson
import pytest
from fastapi import FastAPI

from app.ledger.seam import Committed
from app.main import create_app
from tests.conftest import empty_database, make_settings
from tests.support.payloads import file_entry, track_webhook
from tests.support.signing import Signer


@pytest.fixture
async def started_app(database_url: str, signer: Signer) -> AsyncIterator[FastAPI]:
    await empty_database(database_url)
    app = create_app(make_settings(database_url, signer))
    async with app.router.lifespan_context(app):
        yield app


async def test_every_committed_delivery_reaches_the_listeners_once(
    started_app: FastAPI, signer: Signer
) -> None:
    heard: list[Committed] = []

    def listener(batch: Sequence[Committed]) -> None:
        heard.extend(batch)

    started_app.state.ledger.seam.subscribe(listener)
    intake = started_app.state.intake

    async def deliver(document: dict[str, object]) -> Committed:
        body = orjson.dumps(document)
        committed: Committed = await intake.receive(body, [signer.sign(body)])
        # Listeners run after the answer is handed over (call_soon), never before it.
        assert committed not in heard
        await asyncio.sleep(0)
        return committed

    stopped = track_webhook("stopped", session_id="seam", files=[file_entry("seam")])
    answers = [
        await deliver(track_webhook("starting", session_id="seam")),
        await deliver(stopped),
        await deliver(stopped),  # an exact repeat
        await deliver({"webhookType": "session-started", "data": {"sessionId": "seam"}}),
    ]
    assert heard == answers
    starting, applied, duplicate, ignored = heard
    assert (starting.before, starting.after and starting.after.status.value) == (None, "starting")
    assert applied.before == starting.after
    assert applied.after is not None and applied.after.status.value == "stopped"
    assert [c.outcome.value for c in heard] == ["applied", "applied", "duplicate", "ignored"]
    assert (duplicate.before, duplicate.after, duplicate.changed) == (None, None, False)
    assert (ignored.recording_id, ignored.changed) == (None, False)
    assert len({c.event_id for c in heard}) == 4


async def test_a_failing_listener_costs_the_delivery_nothing(
    started_app: FastAPI, signer: Signer
) -> None:
    def broken(_batch: Sequence[Committed]) -> None:
        raise RuntimeError("a listener's bug")

    started_app.state.ledger.seam.subscribe(broken)
    body = orjson.dumps(track_webhook("started", session_id="seam-broken"))
    committed = await started_app.state.intake.receive(body, [signer.sign(body)])
    await asyncio.sleep(0)
    assert committed.outcome.value == "applied"
