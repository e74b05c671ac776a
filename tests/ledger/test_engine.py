"""The engines the service builds: what a failed statement's error may say."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.ledger.engine import Role, create_engine, driver_connection
from app.ledger.faults import DatabaseUnavailable, storage_faults
from tests.conftest import make_settings
from tests.support.signing import Signer

SECRET = '{"fileUrl":"https://cdn.example/secret-recording.mp4"}'


@pytest.mark.parametrize("role", list(Role))
async def test_a_failed_statement_never_carries_its_parameters(
    database_url: str, signer: Signer, role: Role
) -> None:
    # The fault handler logs the error with its traceback; on intake the parameters are
    # payloads, bodies and signatures, which the log must never hold.
    engine = create_engine(make_settings(database_url, signer), role)
    try:
        async with engine.connect() as connection:
            with pytest.raises(DBAPIError) as failure:
                await connection.execute(
                    text("SELECT * FROM no_such_table WHERE body = :body"), {"body": SECRET}
                )
    finally:
        await engine.dispose()
    assert "no_such_table" in str(failure.value)
    assert "secret-recording" not in str(failure.value)


@pytest.mark.parametrize("role", [Role.READS, Role.WRITES])
async def test_a_statement_timeout_keeps_the_pool_and_its_bound(
    shared_database_url: str, signer: Signer, role: Role
) -> None:
    # A statement cancelled by statement_timeout (SQLSTATE 57014) leaves a healthy
    # connection. Taking it for a lost server replaced the pool while the others' queries
    # still ran on the old one, so more backends ran reads than DB_READ_POOL_SIZE allows
    # (CI: 6 busy read connections with a pool of 5); on intake, a lock wait past its bound
    # did the same to the writers' pool.
    settings = make_settings(
        shared_database_url,
        signer,
        db_read_timeout_seconds=0.2,
        db_statement_timeout_seconds=0.2,
        db_read_pool_size=2,
        db_pool_size=2,
    )
    engine = create_engine(settings, role)
    pool = engine.pool
    try:
        with pytest.raises(DatabaseUnavailable):
            async with storage_faults(), driver_connection(engine) as driver:
                await driver.fetchval("SELECT pg_sleep(5)")
        assert engine.pool is pool, "the pool was replaced after a statement timeout"
        async with storage_faults(), driver_connection(engine) as driver:
            backend = await driver.fetchval("SELECT pg_backend_pid()")
        async with storage_faults(), driver_connection(engine) as driver:
            # The connection that timed out is reused, not reopened.
            assert await driver.fetchval("SELECT pg_backend_pid()") == backend
        assert pool.checkedin() == 1
    finally:
        await engine.dispose()
