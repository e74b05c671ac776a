"""The change feed's clock: the number of the transaction that writes a change.

On PostgreSQL it is the transaction's own id, `pg_current_xact_id()` (64 bits, never
wrapping); the feed orders by it and serves only what every older transaction has
finished with (ledger/feed.py). On SQLite writers are serialised, so a counter bumped in
the write transaction (`feed_clock`) is commit order itself.
"""

from __future__ import annotations

from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.ledger.tables import FEED_CLOCK

# xid8 has no cast to bigint; its text form is the decimal number.
POSTGRESQL_TXN = "pg_current_xact_id()::text::bigint"


async def transaction_number(connection: AsyncConnection) -> int:
    """The feed number of the transaction open on `connection`."""
    if connection.dialect.name == "postgresql":
        number: int = (await connection.execute(text(f"SELECT {POSTGRESQL_TXN}"))).scalar_one()
        return number
    bumped = (
        update(FEED_CLOCK)
        .where(FEED_CLOCK.c.id == 1)
        .values(txn=FEED_CLOCK.c.txn + 1)
        .returning(FEED_CLOCK.c.txn)
    )
    counted: int = (await connection.execute(bumped)).scalar_one()
    return counted
