"""Alembic on both databases: the migrated schema is the models' schema, and each migration
goes down and up again without losing rows. Each test gets a database of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from app.ledger.migrations import alembic_config, current_revision, head_revision
from app.ledger.tables import Base
from tests.conftest import BACKENDS, note_tested, reachable_postgres_admin
from tests.support import databases


@pytest.fixture(params=BACKENDS)
async def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        note_tested("sqlite")
        yield databases.sqlite_url(tmp_path)
        return
    admin = await reachable_postgres_admin()
    url = await databases.create_postgres_database(admin)
    note_tested("postgresql")
    try:
        yield url
    finally:
        await databases.drop_postgres_database(admin, url)


def migrate(url: str, direction: str, revision: str) -> None:
    config = alembic_config(url)
    config.attributes["configure_logging"] = False
    getattr(command, direction)(config, revision)


async def run_sync_on(url: str, work: Any) -> Any:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.run_sync(work)
            await connection.commit()
            return result
    finally:
        await engine.dispose()


def schema_differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    differences: list[Any] = compare_metadata(context, Base.metadata)
    return differences


def index_names(connection: Connection) -> dict[str, set[str]]:
    inspector = inspect(connection)
    return {
        table: {str(index["name"]) for index in inspector.get_indexes(table)}
        for table in ("recordings", "webhook_events")
    }


def insert_recording_and_event(connection: Connection) -> None:
    connection.execute(
        text(
            "INSERT INTO recordings (id, meeting_id, session_id, participant_id, kind, sequence,"
            " status, created_at, updated_at, files, event_fingerprints, is_latest, version)"
            " VALUES (1, 'm', 's', 'p', 'audio', 1, 'started', '2026-11-21 10:00:00+00',"
            " '2026-11-21 10:00:00+00', '[]', '[]', true, 1)"
        )
    )
    connection.execute(
        text(
            "INSERT INTO webhook_events (id, received_at, webhook_type, outcome, fingerprint,"
            " recording_id, payload) VALUES (1, '2026-11-21 10:00:00+00',"
            " 'participant-track-recording-started', 'applied', 'f', 1, '{}')"
        )
    )


def counts(connection: Connection) -> tuple[int, int]:
    recordings = connection.execute(text("SELECT count(*) FROM recordings")).scalar_one()
    events = connection.execute(text("SELECT count(*) FROM webhook_events")).scalar_one()
    return int(recordings), int(events)


async def test_the_migrated_schema_is_the_models_schema(fresh_url: str) -> None:
    await asyncio.to_thread(migrate, fresh_url, "upgrade", "head")

    assert await run_sync_on(fresh_url, schema_differences) == []


async def test_0002_goes_down_and_up_keeping_the_rows(fresh_url: str) -> None:
    await asyncio.to_thread(migrate, fresh_url, "upgrade", "0001")
    await run_sync_on(fresh_url, insert_recording_and_event)

    await asyncio.to_thread(migrate, fresh_url, "upgrade", "0002")
    at_head = await run_sync_on(fresh_url, index_names)
    await asyncio.to_thread(migrate, fresh_url, "downgrade", "0001")
    at_0001 = await run_sync_on(fresh_url, index_names)
    await asyncio.to_thread(migrate, fresh_url, "upgrade", "0002")

    assert await run_sync_on(fresh_url, current_revision) == "0002"
    assert "ix_webhook_events_recording_timeline" in at_head["webhook_events"]
    assert "ix_webhook_events_recording_id" not in at_head["webhook_events"]
    assert "ix_recordings_kind_updated" not in at_head["recordings"]
    assert "ix_webhook_events_recording_id" in at_0001["webhook_events"]
    assert "ix_webhook_events_recording_timeline" not in at_0001["webhook_events"]
    assert "ix_recordings_kind_updated" in at_0001["recordings"]
    assert await run_sync_on(fresh_url, index_names) == at_head
    assert await run_sync_on(fresh_url, counts) == (1, 1)
    await asyncio.to_thread(migrate, fresh_url, "upgrade", "head")
    assert await run_sync_on(fresh_url, current_revision) == head_revision()
    assert await run_sync_on(fresh_url, schema_differences) == []


def change_txns(connection: Connection) -> list[int]:
    rows = connection.execute(text("SELECT change_txn FROM recordings ORDER BY id"))
    return [int(value) for value in rows.scalars()]


def feed_clock(connection: Connection) -> list[tuple[int, int]]:
    return [tuple(row) for row in connection.execute(text("SELECT id, txn FROM feed_clock"))]


def insert_recording_without_change_txn(connection: Connection) -> None:
    """What a replica of the previous release writes during a rolling deploy."""
    connection.execute(
        text(
            "INSERT INTO recordings (id, meeting_id, session_id, participant_id, kind, sequence,"
            " status, created_at, updated_at, files, event_fingerprints, is_latest, version)"
            " VALUES (2, 'm', 's2', 'p', 'audio', 1, 'started', '2026-11-21 10:00:00+00',"
            " '2026-11-21 10:00:00+00', '[]', '[]', true, 1)"
        )
    )


async def test_0003_gives_existing_recordings_a_place_at_the_start_of_the_feed(
    fresh_url: str,
) -> None:
    await asyncio.to_thread(migrate, fresh_url, "upgrade", "0002")
    await run_sync_on(fresh_url, insert_recording_and_event)
    await asyncio.to_thread(migrate, fresh_url, "upgrade", "0003")

    assert await run_sync_on(fresh_url, change_txns) == [0]
    assert await run_sync_on(fresh_url, feed_clock) == [(1, 0)]
    index = await run_sync_on(fresh_url, index_names)
    assert "ix_recordings_change" in index["recordings"]
    if fresh_url.startswith("postgresql"):
        # The previous release's inserts are stamped with their transaction by the default.
        await run_sync_on(fresh_url, insert_recording_without_change_txn)
        assert (await run_sync_on(fresh_url, change_txns))[1] > 0
    await asyncio.to_thread(migrate, fresh_url, "downgrade", "0002")
    assert "ix_recordings_change" not in (await run_sync_on(fresh_url, index_names))["recordings"]
    await asyncio.to_thread(migrate, fresh_url, "upgrade", "head")
    assert await run_sync_on(fresh_url, schema_differences) == []


def insert_baseline(connection: Connection) -> None:
    connection.execute(
        text(
            "INSERT INTO recording_baselines (recording_id, meeting_id, sequence, status,"
            " created_at, updated_at, files, event_fingerprints, events_pruned, pruned_at)"
            " VALUES (1, 'm', 1, 'started', '2026-11-21 10:00:00+00', '2026-11-21 10:00:00+00',"
            " '[]', '[]', 1, '2026-12-01 10:00:00+00')"
        )
    )


def delete_baselines(connection: Connection) -> None:
    connection.execute(text("DELETE FROM recording_baselines"))


def table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_0006_adds_the_baselines_and_refuses_to_drop_any(fresh_url: str) -> None:
    await asyncio.to_thread(migrate, fresh_url, "upgrade", "0002")
    await run_sync_on(fresh_url, insert_recording_and_event)
    await asyncio.to_thread(migrate, fresh_url, "upgrade", "0006")
    assert "recording_baselines" in await run_sync_on(fresh_url, table_names)
    await run_sync_on(fresh_url, insert_baseline)

    with pytest.raises(RuntimeError, match="holds 1 baseline"):
        await asyncio.to_thread(migrate, fresh_url, "downgrade", "0005")
    assert await run_sync_on(fresh_url, current_revision) == "0006"
    await run_sync_on(fresh_url, delete_baselines)
    await asyncio.to_thread(migrate, fresh_url, "downgrade", "0005")

    assert "recording_baselines" not in await run_sync_on(fresh_url, table_names)
    assert await run_sync_on(fresh_url, counts) == (1, 1)
    await asyncio.to_thread(migrate, fresh_url, "upgrade", "head")
    assert await run_sync_on(fresh_url, schema_differences) == []
