"""Fixtures: every API test runs once on PostgreSQL and once on SQLite, each migrated
by Alembic and emptied before each test."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.config import Settings
from app.ledger.migrations import upgrade_to_head
from app.main import create_app
from tests.support import databases
from tests.support.client import WebhookClient
from tests.support.server import ServerProcess
from tests.support.signing import Signer

BACKENDS = ("postgresql", "sqlite")
REQUIRE_POSTGRES = os.environ.get("TRACKHOOK_REQUIRE_POSTGRES") == "1"
_tested: set[str] = set()
_postgres_skipped: list[str] = []


def note_tested(backend: str) -> None:
    """Record a database the suite really used, for the closing summary line."""
    _tested.add(backend)


def postgres_unavailable(message: str) -> NoReturn:
    """Skip the test, or fail it when the run insists on PostgreSQL (CI does)."""
    if REQUIRE_POSTGRES:
        pytest.fail(message + " and TRACKHOOK_REQUIRE_POSTGRES=1", pytrace=False)
    _postgres_skipped.append(message)
    pytest.skip(message)


async def reachable_postgres_admin() -> str:
    """TEST_DATABASE_URL's server, if it answers (else skip or fail, as above)."""
    admin = databases.admin_url()
    reason = await databases.postgres_reachable(admin)
    if reason is not None:
        postgres_unavailable(f"PostgreSQL at TEST_DATABASE_URL={admin} is unreachable ({reason})")
    return admin


@pytest.fixture(scope="session")
def signer() -> Signer:
    return Signer.generate()


@pytest.fixture(scope="session", params=BACKENDS)
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    if request.param == "sqlite":
        url = databases.sqlite_url(tmp_path_factory.mktemp("sqlite"))
        await asyncio.to_thread(upgrade_to_head, url)
        _tested.add("sqlite")
        yield url
        return
    admin = await reachable_postgres_admin()
    url = await databases.create_postgres_database(admin)
    await asyncio.to_thread(upgrade_to_head, url)
    _tested.add("postgresql")
    try:
        yield url
    finally:
        await databases.drop_postgres_database(admin, url)


async def empty_database(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                await connection.execute(
                    text(
                        "TRUNCATE recording_baselines, webhook_events, recordings "
                        "RESTART IDENTITY CASCADE"
                    )
                )
            else:
                await connection.execute(text("DELETE FROM recording_baselines"))
                await connection.execute(text("DELETE FROM webhook_events"))
                await connection.execute(text("DELETE FROM recordings"))
    finally:
        await engine.dispose()


def make_settings(database_url: str, signer: Signer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "videosdk_public_key": SecretStr(signer.public_pem),
        "api_tokens": [],
        # The suite's apps serve /v1 openly unless a test gives tokens.
        "api_auth": "required" if overrides.get("api_tokens") else "off",
    }
    values.update(overrides)
    return Settings(**values)


ClientFactory = Callable[..., Awaitable[WebhookClient]]


@pytest.fixture
async def make_client(database_url: str, signer: Signer) -> AsyncIterator[ClientFactory]:
    """Build a client over a freshly started app; keyword arguments override settings."""
    await empty_database(database_url)
    stack: list[Any] = []

    async def factory(**overrides: Any) -> WebhookClient:
        url = overrides.pop("database_url", database_url)
        app = create_app(make_settings(url, signer, **overrides))
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://trackhook.test"
        )
        stack.append((lifespan, http))
        return WebhookClient(http, signer)

    yield factory
    for lifespan, http in reversed(stack):
        await http.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def client(make_client: ClientFactory) -> WebhookClient:
    return await make_client()


@pytest.fixture
def backend(database_url: str) -> str:
    return "postgresql" if database_url.startswith("postgresql") else "sqlite"


@asynccontextmanager
async def migrated_postgres_database() -> AsyncIterator[str]:
    """A fresh, migrated database on the shared server (which these tests never stop),
    dropped afterwards; fixtures of any scope hold one."""
    admin = await reachable_postgres_admin()
    url = await databases.create_postgres_database(admin)
    try:
        await asyncio.to_thread(upgrade_to_head, url)
        note_tested("postgresql")
        yield url
    finally:
        await databases.drop_postgres_database(admin, url)


@pytest.fixture
async def shared_database_url() -> AsyncIterator[str]:
    async with migrated_postgres_database() as url:
        yield url


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Servers a test started; whatever state the test left them in, they are killed."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.kill()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    tested = ", ".join(sorted(_tested)) or "none"
    terminalreporter.write_line(f"trackhook: databases tested: {tested}")
    for message in dict.fromkeys(_postgres_skipped):
        terminalreporter.write_line(f"trackhook: PostgreSQL tests were SKIPPED: {message}")


def fixture_dir() -> Path:
    return Path(__file__).parent / "fixtures" / "videosdk"
