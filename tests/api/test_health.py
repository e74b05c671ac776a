"""Probes and docs: /healthz, /readyz (database reachable and schema at head), /docs."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.ledger.migrations import alembic_config, head_revision
from app.main import create_app
from tests.conftest import make_settings
from tests.support import databases
from tests.support.client import WebhookClient
from tests.support.signing import Signer


async def test_healthz(client: WebhookClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_the_migration_head(client: WebhookClient, backend: str) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["database"] == backend
    assert body["migration"] == head_revision()
    assert body["migration"]


@asynccontextmanager
async def app_on(
    database_url: str, signer: Signer, **overrides: Any
) -> AsyncIterator[WebhookClient]:
    """A started app on another database (make_client always uses the suite's database)."""
    app = create_app(make_settings(database_url, signer, **overrides))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://trackhook.test"
        ) as http,
    ):
        yield WebhookClient(http, signer)


@pytest.fixture
async def unmigrated_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A reachable database of the same kind on which no migration ever ran."""
    if backend == "sqlite":
        yield databases.sqlite_url(tmp_path)
        return
    admin = databases.admin_url()
    url = await databases.create_postgres_database(admin)
    try:
        yield url
    finally:
        await databases.drop_postgres_database(admin, url)


async def test_readyz_503_on_a_database_never_migrated(unmigrated_url: str, signer: Signer) -> None:
    async with app_on(unmigrated_url, signer, retry_after_seconds=9) as client:
        response = await client.get("/readyz")
        alive = await client.get("/healthz")

    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "9"
    assert response.json()["error"] == "schema_not_migrated"
    assert alive.status_code == 200


async def test_readyz_503_when_the_schema_is_older_than_the_code(
    unmigrated_url: str, signer: Signer
) -> None:
    await asyncio.to_thread(upgrade_to, unmigrated_url, "0001")
    async with app_on(unmigrated_url, signer) as client:
        response = await client.get("/readyz")

    assert response.status_code == 503, response.text
    assert "retry-after" in response.headers
    assert response.json()["error"] == "schema_not_migrated"


async def test_readyz_stays_ready_on_a_newer_schema(unmigrated_url: str, signer: Signer) -> None:
    """A rolling deploy migrates first: the replicas still on this release keep serving
    while the schema carries a revision they do not know (issue 11, item 5)."""
    await asyncio.to_thread(upgrade_to, unmigrated_url, "head")
    engine = create_async_engine(unmigrated_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = '9999_next'"))
    finally:
        await engine.dispose()
    async with app_on(unmigrated_url, signer) as client:
        response = await client.get("/readyz")
        served = await client.get("/v1/recordings")

    assert response.status_code == 200, response.text
    assert response.json()["migration"] == "9999_next"
    assert served.status_code == 200


def upgrade_to(url: str, revision: str) -> None:
    config = alembic_config(url)
    config.attributes["configure_logging"] = False
    command.upgrade(config, revision)


async def test_readyz_503_when_the_database_is_unreachable(signer: Signer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more: the connection is refused at once.
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/none"
    async with app_on(url, signer, db_connect_timeout_seconds=2) as client:
        response = await client.get("/readyz")
        alive = await client.get("/healthz")

    assert response.status_code == 503, response.text
    assert "retry-after" in response.headers
    assert response.json()["error"] == "database_unavailable"
    assert alive.status_code == 200


async def test_openapi_and_docs(client: WebhookClient) -> None:
    spec = await client.get("/openapi.json")
    docs = await client.get("/docs")

    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert {"/webhooks/videosdk", "/v1/recordings", "/v1/recordings/{recording_id}"} <= set(paths)
    assert "/v1/webhook-events" in paths
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in docs.text
