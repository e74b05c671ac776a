"""Make deliveries old without waiting: move a session's times back, in the log and in its
recordings together (so the recordings still agree with the log)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.ledger.tables import EVENTS, RECORDINGS


async def move_back(engine: AsyncEngine, by: timedelta, session: str | None = None) -> None:
    """As if the deliveries of `session` (of every session when None) had been received `by`
    earlier: every time in its events and recordings moved back together."""
    stamps = [column.name for column in RECORDINGS.c if column.name.endswith("_at")]
    async with engine.begin() as connection:
        for table, columns in ((EVENTS, ["received_at"]), (RECORDINGS, stamps)):
            statement = select(table.c.id, *(table.c[name] for name in columns))
            if session is not None:
                statement = statement.where(table.c.session_id == session)
            rows = (await connection.execute(statement)).mappings().all()
            for row in rows:
                moved = {name: row[name] - by for name in columns if row[name] is not None}
                await connection.execute(
                    update(table).where(table.c.id == row["id"]).values(**moved)
                )
