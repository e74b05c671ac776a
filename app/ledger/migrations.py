"""Alembic from inside the service: `trackhook migrate`, `serve`, and the schema's version."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The PostgreSQL advisory lock a migration holds ("trkhmigr"). Advisory locks belong to one
# database: migrations of other databases on the same server never wait for it.
MIGRATION_LOCK_KEY = 0x7472_6B68_6D69_6772
# Beside a SQLite file, as its -wal and -shm are: the lock the migrations of that file take.
SQLITE_LOCK_SUFFIX = "-migrate.lock"
LOCK_RETRY_SECONDS = (0.05, 1.0)  # the first wait between two tries, and the longest


def alembic_config(database_url: str | None = None) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    if database_url is not None:
        config.attributes["database_url"] = database_url
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade_to_head(database_url: str) -> str | None:
    """Migrate to this code's head; a schema already past it (at a revision this code does
    not know: a later release migrated it) is left as it is, and its revision returned."""
    config = alembic_config(database_url)
    config.attributes["configure_logging"] = False
    config.attributes["leave_newer_schema"] = True
    command.upgrade(config, "head")
    newer = config.attributes.get("newer_schema")
    return newer if isinstance(newer, str) else None


@asynccontextmanager
async def migrating(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """The connection to migrate on, once no other process is migrating the database: the
    migrations that start together run one after the other, and each reads the schema's
    version only once the one before it has finished, so the later ones find it at head.

    PostgreSQL: an advisory lock on that connection, released when it ends (or, on a
    failure, when the connection is closed: PostgreSQL releases a session's locks with it).
    SQLite: an exclusive `flock` on a file beside the database, released by the kernel
    whatever happens to the process. SQLite serialises each write, not a whole migration:
    two processes that both read "not migrated" would both create the tables."""
    if engine.dialect.name == "sqlite":
        async with _file_lock(engine.url.database):
            async with engine.connect() as connection:
                yield connection
        return
    async with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            await _wait_for(lambda: _try_advisory_lock(connection), "the migration lock")
        try:
            yield connection
        except BaseException:
            await connection.invalidate()  # closed, so its lock is released now
            raise
        if engine.dialect.name == "postgresql":
            await connection.execute(
                text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
            await connection.commit()


async def _try_advisory_lock(connection: AsyncConnection) -> bool:
    # Tried, not waited for inside PostgreSQL: a session blocked in pg_advisory_lock holds a
    # snapshot, and the holder's CREATE INDEX CONCURRENTLY waits for every older snapshot:
    # each would wait for the other until the deadlock detector failed one. Between tries
    # the session is idle, outside any transaction.
    result = await connection.execute(
        text("SELECT pg_try_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
    )
    taken = bool(result.scalar_one())
    await connection.commit()
    return taken


@asynccontextmanager
async def _file_lock(database: str | None) -> AsyncIterator[None]:
    if not database or database == ":memory:" or database.startswith("file:"):
        yield  # in memory (one connection's own), or a URI filename: nothing to share
        return
    path = database + SQLITE_LOCK_SUFFIX
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await _wait_for(lambda: _try_flock(descriptor), path)
        yield
    finally:
        os.close(descriptor)  # and with it the lock


async def _try_flock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


async def _wait_for(take: Callable[[], Awaitable[bool]], what: str) -> None:
    delay, longest = LOCK_RETRY_SECONDS
    if await take():
        return
    logger.info("another migration holds %s: waiting for it to finish", what)
    while True:
        await asyncio.sleep(delay)
        if await take():
            return
        delay = min(delay * 2, longest)


def current_revision(connection: Connection) -> str | None:
    """Alembic's own reading of the schema version; None when never migrated."""
    return MigrationContext.configure(connection).get_current_revision()


def is_older_than_the_code(revision: str | None) -> bool:
    """A schema this code cannot run on: never migrated, or at a revision this code's
    migrations lead through to their head but not at it. A revision this code does not
    know is newer (a later release migrated first, as a rolling deploy does): the
    migrations are expand-then-contract (docs/OPERATIONS.md), so the code still runs."""
    if revision is None:
        return True
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    if revision == head:
        return False
    known = {rev.revision for rev in script.walk_revisions()}
    return revision in known
