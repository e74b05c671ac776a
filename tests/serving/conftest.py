"""A real server per module (the protocol, timeouts and headers only exist in a process),
on a fresh PostgreSQL database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.conftest import migrated_postgres_database
from tests.support.deliveries import server_env
from tests.support.server import ServerProcess
from tests.support.signing import Signer


@pytest.fixture(scope="module")
async def serving_database_url() -> AsyncIterator[str]:
    async with migrated_postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
async def server(
    serving_database_url: str, signer: Signer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServerProcess]:
    """One server for the module's tests, started with the product's defaults."""
    process = ServerProcess(
        env=server_env(serving_database_url, signer),
        log_path=tmp_path_factory.mktemp("server") / "server.log",
    )
    await asyncio.to_thread(process.start)
    try:
        yield process
    finally:
        await asyncio.to_thread(process.stop)
