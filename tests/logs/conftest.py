"""Apps and servers whose log lines the tests read (issue 11, item 2)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from tests.conftest import empty_database, make_settings
from tests.support.client import WebhookClient
from tests.support.signing import Signer

# What no log line may hold: a value that only a payload carries, and a bearer token.
PAYLOAD_ONLY = "only-in-the-payload-5c2e9"
TOKEN = "log-test-token-d41d8cd98f00b204"
LINE_FIELDS = ("time", "level", "logger", "message", "request_id")
INTAKE_FIELDS = (
    "outcome",
    "status",
    "webhook_type",
    "meeting_id",
    "session_id",
    "participant_id",
    "kind",
    "event_id",
    "recording_id",
    "duration_ms",
)
GENERATED_ID = r"[0-9a-f]{32}"


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` as a JSON object (a line that is not one fails the test)."""
    lines = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            parsed = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(parsed, dict), line
        lines.append(parsed)
    return lines


def intake_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == "trackhook.intake"]


@dataclass
class Served:
    app: FastAPI
    client: WebhookClient

    @property
    def http(self) -> httpx.AsyncClient:
        return self.client.http


AppFactory = Callable[..., Awaitable[Served]]


@pytest.fixture
async def make_app(database_url: str, signer: Signer) -> AsyncIterator[AppFactory]:
    """Like `make_client`, with the app itself at hand; unexpected errors are answered 500
    (as a server does) rather than raised into the test."""
    await empty_database(database_url)
    async with AsyncExitStack() as stack:

        async def factory(**overrides: Any) -> Served:
            app = create_app(make_settings(database_url, signer, **overrides))
            await stack.enter_async_context(app.router.lifespan_context(app))
            http = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                    base_url="http://trackhook.test",
                )
            )
            return Served(app, WebhookClient(http, signer))

        yield factory
