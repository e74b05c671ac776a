"""Throwaway databases for the suite: one PostgreSQL database per run, one SQLite file."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from app.core.config import normalise_database_url

DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    """TEST_DATABASE_URL names a server and a database we may connect to for CREATE DATABASE."""
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)


def asyncpg_dsn(url: str) -> str:
    return (
        make_url(normalise_database_url(url))
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )


async def postgres_reachable(url: str) -> str | None:
    """None when reachable, else the reason."""
    try:
        connection = await asyncpg.connect(asyncpg_dsn(url), timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await connection.close()
    return None


async def create_postgres_database(url: str) -> str:
    name = f"trackhook_test_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return normalise_database_url(
        make_url(normalise_database_url(url))
        .set(database=name)
        .render_as_string(hide_password=False)
    )


async def drop_postgres_database(admin: str, database_url: str) -> None:
    name = make_url(database_url).database
    connection = await asyncpg.connect(asyncpg_dsn(admin), timeout=10)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'trackhook-test.db'}"
