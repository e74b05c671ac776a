"""The read path plans each statement for its values, however often it runs.

asyncpg prepares every statement on a pooled connection. After five runs PostgreSQL may
keep a generic plan, costed for average values; for a read filtered by a rare value that
plan can be a hundred times slower (the event log by a rare outcome: 134 ms against 0.8 ms,
found when a statement timeout stopped replacing the read pool, whose fresh connections had
hidden it). Reads ask for anything a client chooses, so their connections never keep one."""

from __future__ import annotations

from app.ledger.engine import Role, create_engine, driver_connection
from app.ledger.queries import EventFilter, list_events
from app.ledger.reader import reader_factory
from tests.conftest import make_settings
from tests.support.signing import Signer


async def test_a_read_run_many_times_is_never_planned_generically(
    shared_database_url: str, signer: Signer
) -> None:
    settings = make_settings(shared_database_url, signer, db_read_pool_size=1)
    engine = create_engine(settings, Role.READS)
    try:
        open_reader = reader_factory(engine)
        filters = EventFilter(webhook_types=["type-1", "type-2"], outcomes=["rejected"])
        for _ in range(8):
            async with open_reader() as reader:
                await list_events(reader, filters, limit=50, before_id=None)
        async with driver_connection(engine) as driver:  # the pool's one connection
            plans = await driver.fetch(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE statement LIKE '%FROM webhook_events%' "
                "AND statement NOT LIKE '%pg_prepared_statements%'"
            )
    finally:
        await engine.dispose()
    assert len(plans) == 1, plans
    assert plans[0]["custom_plans"] == 8
    assert plans[0]["generic_plans"] == 0


async def test_intake_keeps_postgresql_plan_choice(
    shared_database_url: str, signer: Signer
) -> None:
    # Intake's statements are key lookups that one plan fits for every value: planning each
    # run would cost CPU on the hot path for nothing.
    engine = create_engine(make_settings(shared_database_url, signer), Role.WRITES)
    try:
        async with driver_connection(engine) as driver:
            assert await driver.fetchval("SHOW plan_cache_mode") == "auto"
    finally:
        await engine.dispose()
