"""What the API's handlers take from the app the lifespan built."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import Request

from app.core.config import Settings
from app.ledger.ledger import Ledger


def ledger_of(request: Request) -> Ledger:
    ledger = request.app.state.ledger
    assert isinstance(ledger, Ledger), "the lifespan has not run"
    return ledger


def settings_of(request: Request) -> Settings:
    settings = request.app.state.settings
    assert isinstance(settings, Settings), "the lifespan has not run"
    return settings


def stuck_before(request: Request) -> datetime:
    """A recording not finished and last updated before this instant is stuck."""
    return datetime.now(UTC) - timedelta(seconds=settings_of(request).stuck_after_seconds)
