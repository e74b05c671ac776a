"""Engines and connections: how the ledger reaches PostgreSQL or the SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg
import orjson
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, Pool, PoolProxiedConnection

from app.core.config import Settings
from app.ledger.faults import is_connection_lost
from app.videosdk.documents import document_text


def _json_serializer(value: Any) -> str:
    return document_text(value)


class Role(StrEnum):
    """What an engine's connections are for, which decides their pool and their bounds."""

    WRITES = "writes"  # intake: DB_POOL_SIZE, DB_STATEMENT_TIMEOUT_SECONDS per statement
    READS = "reads"  # the /v1 API and the feed: DB_READ_POOL_SIZE, DB_READ_TIMEOUT_SECONDS
    MAINTENANCE = "maintenance"  # migrate, rebuild: no statement bound


class _CountingPool(AsyncAdaptedQueuePool):
    """SQLAlchemy's pool, counting the checkouts in progress: those waiting for a free
    connection, or for a new one to open (a checkout that finds one free never yields, so
    nobody sees it counted). Each engine has its own subclass: a pool replaced after a lost
    connection (`recreate` builds one of the same class) keeps counting where it was."""

    waiting = 0
    # Its log lines stay SQLAlchemy's (whose loggers are at WARNING unless asked otherwise).
    _sqla_logger_namespace = "sqlalchemy.pool.impl.AsyncAdaptedQueuePool"

    def connect(self) -> PoolProxiedConnection:
        cls = type(self)
        cls.waiting += 1
        try:
            return super().connect()
        finally:
            cls.waiting -= 1


def counting_pool() -> type[_CountingPool]:
    return type("CountingPool", (_CountingPool,), {"waiting": 0})


@dataclass(frozen=True, slots=True)
class PoolUsage:
    """One pool's connections, now (for the metrics)."""

    name: str
    size: int
    in_use: int
    waiting: int


def pool_usage(name: str, pool: Pool) -> PoolUsage:
    size = pool.size() if isinstance(pool, AsyncAdaptedQueuePool) else 0
    in_use = pool.checkedout() if isinstance(pool, AsyncAdaptedQueuePool) else 0
    waiting = type(pool).waiting if isinstance(pool, _CountingPool) else 0
    return PoolUsage(name, size, in_use, waiting)


def create_engine(settings: Settings, role: Role = Role.MAINTENANCE) -> AsyncEngine:
    bound = {
        Role.WRITES: settings.db_statement_timeout_seconds,
        Role.READS: settings.db_read_timeout_seconds,
        Role.MAINTENANCE: None,
    }[role]
    if settings.is_sqlite:
        return _sqlite_engine(settings, role, bound)
    name = "trackhook" if role is Role.WRITES else f"trackhook-{role.value}"
    server_settings = {"application_name": name}
    if bound is not None:
        server_settings.update(
            statement_timeout=str(int(bound * 1000)),  # lock waits included
            # Nothing of ours leaves a transaction idle; if something did, its locks go.
            idle_in_transaction_session_timeout=str(int(bound * 2000)),
        )
    if role is Role.READS:
        server_settings["default_transaction_read_only"] = "on"  # the read path never writes
        # Plans for the values given. asyncpg prepares every statement, and after five runs
        # PostgreSQL may keep a generic plan, costed for average values: for the event log
        # filtered by a rare outcome that plan took 134 ms where the values' own took 0.8.
        # A read's filters are anything a client asks; planning each costs tens of µs.
        server_settings["plan_cache_mode"] = "force_custom_plan"
    return create_async_engine(
        settings.database_url,
        json_serializer=_json_serializer,
        json_deserializer=orjson.loads,
        # Errors are logged with their text; on intake the parameters are bodies and
        # signatures, which no log line may hold.
        hide_parameters=True,
        pool_size=settings.db_read_pool_size if role is Role.READS else settings.db_pool_size,
        max_overflow=0,  # overflow connections churn (connect, fork a backend, close) under load
        pool_timeout=settings.db_connect_timeout_seconds,
        poolclass=counting_pool(),
        # No pre-ping: it costs two round trips per checkout. A connection found dead
        # fails its request with a 503 (VideoSDK retries) and SQLAlchemy then invalidates
        # the whole pool, so one failed request per process is the cost of a restart.
        connect_args={
            "timeout": settings.db_connect_timeout_seconds,
            # The client's own bound, for a server or network that stops answering at all.
            "command_timeout": None if bound is None else bound + 2,
            "server_settings": server_settings,
        },
    )


def _sqlite_engine(settings: Settings, role: Role, bound: float | None) -> AsyncEngine:
    """SQLite has no row locks: writers take the write lock at BEGIN (BEGIN IMMEDIATE) so
    read-then-write is atomic; readers use plain (deferred) transactions, which in WAL mode
    never wait for a writer. A writer waits for the lock at most `bound` seconds."""
    wait_ms = int((bound if bound is not None else 60.0) * 1000)
    engine = create_async_engine(
        settings.database_url,
        json_serializer=_json_serializer,
        json_deserializer=orjson.loads,
        hide_parameters=True,  # as above
        connect_args={"timeout": wait_ms / 1000},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let us issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={wait_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        if role is Role.READS:
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN" if role is Role.READS else "BEGIN IMMEDIATE")

    return engine


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection's asyncpg connection itself (statements prepared and cached per
    connection: SQLAlchemy's layer cost more CPU than the rest of a webhook's handling).

    A lost connection is handled as SQLAlchemy handles one it sees itself: the server went
    away, so every pooled connection is stale and the pool is replaced."""
    async with engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        try:
            yield driver
        except Exception as exc:
            if is_connection_lost(exc):
                await connection.invalidate(exc)
                await engine.dispose(close=False)
            raise
