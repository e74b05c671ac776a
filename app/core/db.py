"""Database plumbing: metadata, column types shared by the domains, engine and sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from sqlalchemy import BigInteger, DateTime, Dialect, Integer, MetaData, event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import JSON, TypeDecorator

from app.core.config import Settings
from app.core.errors import DatabaseLost

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# SQLite only auto-increments an INTEGER PRIMARY KEY, PostgreSQL gets a 64-bit identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# PostgreSQL `json` (not `jsonb`) keeps what VideoSDK sent as it was, including the
# `\u0000` escapes that `jsonb` refuses; we never query inside the documents.
JsonDocument = JSON()


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _json_serializer(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_engine(settings: Settings) -> AsyncEngine:
    if settings.is_sqlite:
        engine = create_async_engine(
            settings.database_url,
            json_serializer=_json_serializer,
            json_deserializer=orjson.loads,
            connect_args={"timeout": 30},
        )
        _make_sqlite_serialisable(engine)
        return engine
    return create_async_engine(
        settings.database_url,
        json_serializer=_json_serializer,
        json_deserializer=orjson.loads,
        pool_size=settings.db_pool_size,
        max_overflow=0,  # overflow connections churn (connect, fork a backend, close) under load
        pool_timeout=settings.db_connect_timeout_seconds,
        # No pre-ping: it costs two round trips per checkout. A connection found dead
        # fails its request with a 503 (VideoSDK retries) and SQLAlchemy then invalidates
        # the whole pool, so one failed request per process is the cost of a restart.
        connect_args={
            "timeout": settings.db_connect_timeout_seconds,
            "command_timeout": 30,
            "server_settings": {"application_name": "trackhook"},
        },
    )


def _make_sqlite_serialisable(engine: AsyncEngine) -> None:
    """SQLite has no row locks: take the write lock at BEGIN so read-then-write is atomic."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let us issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection's asyncpg connection itself (statements prepared and cached per
    connection: SQLAlchemy's layer cost more CPU than the rest of a webhook's handling).

    A lost connection is handled as SQLAlchemy handles one it sees itself: the server went
    away, so every pooled connection is stale and the pool is replaced; `DatabaseLost`."""
    async with engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        try:
            yield driver
        except Exception as exc:
            if not is_connection_lost(exc):
                raise
            await connection.invalidate(exc)
            await engine.dispose(close=False)
            raise DatabaseLost(str(exc)) from exc


def is_connection_lost(exc: BaseException) -> bool:
    """An asyncpg error meaning the connection or the server is gone (not a bad query)."""
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.InterfaceError
        | asyncpg.PostgresConnectionError
        | asyncpg.exceptions.OperatorInterventionError,
    )
