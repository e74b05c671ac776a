"""The log as an audit trail: every delivery's body and signature header, as received."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.ledger.faults import storage_faults
from app.ledger.tables import EVENTS


@dataclass(frozen=True, slots=True)
class LoggedBody:
    id: int
    body: bytes | None  # None: logged before migration 0004
    signature: str | None  # None: no header came (WEBHOOK_SIGNATURE=off)


_BODIES = select(EVENTS.c.id, EVENTS.c.body, EVENTS.c.signature).order_by(EVENTS.c.id)


async def logged_bodies(engine: AsyncEngine, batch: int = 1000) -> AsyncIterator[LoggedBody]:
    """Every delivery of the log in id order, `batch` rows at a time (a server-side cursor
    on PostgreSQL)."""
    async with storage_faults(), engine.connect() as connection:
        result = await connection.stream(_BODIES.execution_options(yield_per=batch))
        async for row in result:
            yield LoggedBody(row.id, row.body, row.signature)
