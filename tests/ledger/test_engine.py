"""The engines the service builds: what a failed statement's error may say."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.ledger.engine import Role, create_engine
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
