"""Alembic environment: async engine, URL from the service settings."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from app.core.config import Settings
from app.ledger.engine import create_engine
from app.ledger.migrations import current_revision, migrating
from app.ledger.tables import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _database_url() -> str:
    url = config.attributes.get("database_url")
    return url if isinstance(url, str) else Settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        compare_type=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _newer_schema(connection: Connection) -> str | None:
    """The schema's revision when this code does not know it and the caller asked to leave
    such a schema alone (`trackhook migrate`): a later release migrated it, and its
    migrations only expand until the old code is gone (docs/OPERATIONS.md, Migrations), so
    the previous release (a rollback, say) runs on it as it is."""
    if not config.attributes.get("leave_newer_schema"):
        return None
    revision = current_revision(connection)
    known = {script.revision for script in context.script.walk_revisions()}
    return revision if revision is not None and revision not in known else None


def _run_sync(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        # Batch migrations rebuild a table (copy, drop, rename); with foreign keys enforced,
        # dropping `recordings` under its referencing events would fail. The pragma only
        # takes effect outside a transaction, hence the raw connection before any begins.
        cursor = connection.connection.cursor()
        cursor.execute("PRAGMA foreign_keys=OFF")
        cursor.close()
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
        # Each migration commits on its own, so one that builds indexes CONCURRENTLY
        # (outside a transaction) never commits a neighbour's half-done work.
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    if connection.dialect.name == "sqlite":
        # What enforcement would have refused must not have slipped through meanwhile.
        violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if violations:
            raise RuntimeError(f"foreign keys violated after migrating: {violations[:5]}")


async def run_migrations_online() -> None:
    settings = Settings(database_url=_database_url())
    engine = create_engine(settings)
    try:
        # Before Alembic reads the version: migrations started together run one at a time.
        async with migrating(engine) as connection:
            newer = await connection.run_sync(_newer_schema)
            await connection.commit()  # Alembic begins its own transactions
            if newer is not None:
                config.attributes["newer_schema"] = newer
                return
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
