"""Database faults, classified by what the database said, turned into the service's errors.

Every statement the ledger runs goes through `storage_faults()`: a fault that means "cannot
store (or read) now" becomes a 503 with `Retry-After` (VideoSDK delivers again) and one log
line; a missing table means the schema was never migrated; anything else is a bug (500,
logged with its traceback). Nothing of SQLAlchemy or the drivers leaves the ledger.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from enum import Enum

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.core.errors import AppError, ServiceUnavailable

logger = logging.getLogger(__name__)


class DatabaseUnavailable(ServiceUnavailable):
    error = "database_unavailable"


class SchemaNotMigrated(ServiceUnavailable):
    error = "schema_not_migrated"


class DatabaseReadOnly(ServiceUnavailable):
    """Reachable, but it cannot take writes (a standby, or read-only by configuration)."""

    error = "database_read_only"


class StorageFailed(AppError):
    """A statement failed for a reason retrying will not cure (a bug): 500."""


class Fault(Enum):
    UNAVAILABLE = "unavailable"
    SCHEMA_MISSING = "schema_missing"
    BUG = "bug"


# SQLSTATE classes of a statement that was wrong, not of a database that cannot work now:
# data exceptions, integrity violations, syntax and access rules. Every other class
# (connection 08, resources 53 (disk full, too many connections), operator intervention 57
# (shutdown, statement timeout), system 58, rollback 40 (serialisation, deadlock), object
# state 55 (lock timeout, database not accepting connections), read-only 25006, ...) is
# "cannot store now".
_BUG_CLASSES = frozenset({"22", "23", "42"})
_UNDEFINED_TABLE = "42P01"
_INSUFFICIENT_PRIVILEGE = "42501"  # e.g. a read-only role: the operator's to fix, retry
_SQLITE_UNAVAILABLE = frozenset(
    {
        "SQLITE_BUSY",
        "SQLITE_LOCKED",
        "SQLITE_FULL",
        "SQLITE_IOERR",
        "SQLITE_READONLY",
        "SQLITE_CANTOPEN",
        "SQLITE_NOMEM",
        "SQLITE_PROTOCOL",
        "SQLITE_PERM",
    }
)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException):
            stack.append(orig)
        stack.extend([current.__context__, current.__cause__])


def sqlstate_of(exc: BaseException) -> str | None:
    for cause in _causes(exc):
        code = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
        if isinstance(code, str) and len(code) == 5:
            return code
    return None


def classify(exc: BaseException) -> Fault:
    code = sqlstate_of(exc)
    if code is not None:
        if code == _UNDEFINED_TABLE:
            return Fault.SCHEMA_MISSING
        if code[:2] in _BUG_CLASSES and code != _INSUFFICIENT_PRIVILEGE:
            return Fault.BUG
        return Fault.UNAVAILABLE
    for cause in _causes(exc):
        if isinstance(cause, sqlite3.Error):
            if "no such table" in str(cause):
                return Fault.SCHEMA_MISSING
            # Extended codes name their primary first: SQLITE_BUSY_SNAPSHOT, SQLITE_IOERR_WRITE.
            primary = "_".join(str(getattr(cause, "sqlite_errorname", "")).split("_")[:2])
            if primary in _SQLITE_UNAVAILABLE:
                return Fault.UNAVAILABLE
    if is_connection_lost(exc):
        return Fault.UNAVAILABLE
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return Fault.UNAVAILABLE
    return Fault.BUG


def is_connection_lost(exc: BaseException) -> bool:
    """The connection or the server is gone, or none could be had in time (an asyncpg
    connection whose protocol state broke, as when its backend was terminated mid-call,
    is as good as gone).

    A cancelled statement (statement_timeout, pg_cancel_backend: 57014, an operator
    intervention too) is not: its connection is fine. Taken for a lost server, it replaced
    the pool while other connections of the old one still ran their statements, past the
    pool's bound."""
    return any(
        isinstance(
            cause,
            OSError
            | TimeoutError
            | PoolTimeout
            | SAInterfaceError
            | asyncpg.InterfaceError
            | asyncpg.InternalClientError
            | asyncpg.PostgresConnectionError
            | asyncpg.exceptions.OperatorInterventionError,
        )
        and not isinstance(cause, asyncpg.exceptions.QueryCanceledError)
        for cause in _causes(exc)
    )


def describe(exc: BaseException) -> str:
    code = sqlstate_of(exc)
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}{f' [{code}]' if code else ''}: {message[:300]}"


def translate(exc: Exception) -> AppError:
    """The service's error for a database fault (logged here, once)."""
    if isinstance(exc, AppError):
        return exc
    fault = classify(exc)
    if fault is Fault.UNAVAILABLE:
        logger.warning("database unavailable: %s", describe(exc))
        return DatabaseUnavailable("the database cannot store or read now; retry later")
    if fault is Fault.SCHEMA_MISSING:
        logger.error("the database schema is missing: run `trackhook migrate`")
        return SchemaNotMigrated("the database has not been migrated; retry later")
    logger.error("database statement failed", exc_info=exc)
    return StorageFailed("an unexpected error occurred")


@asynccontextmanager
async def storage_faults() -> AsyncIterator[None]:
    """Run ledger statements; any fault leaves as one of the service's errors."""
    try:
        yield
    except AppError:
        raise
    except Exception as exc:
        raise translate(exc) from exc
