"""The locked writer: one delivery in one transaction that holds its track's latest row.

It is all there is on SQLite (where BEGIN IMMEDIATE serialises writers), and on PostgreSQL
it takes what the group writer could not write (`SELECT ... FOR UPDATE`). It executes the
same write plan as the group writer, statement by statement.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Insert, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.ledger.clock import transaction_number
from app.ledger.faults import DatabaseUnavailable, sqlstate_of, storage_faults
from app.ledger.plan import (
    BaseWrite,
    Delivery,
    Target,
    TrackPlan,
    event_values,
    plan_track,
    plan_unapplied,
)
from app.ledger.rows import (
    EARLIER_RUN_COLUMNS,
    STORED_RUN_COLUMNS,
    key_values,
    state_values,
    stored_run,
)
from app.ledger.seam import AfterCommit, Committed
from app.ledger.tables import EVENTS, RECORDINGS
from app.rules.lifecycle import TrackKey

# A pass goes round again only when another delivery for the track committed in between
# (it created the first recording while we looked), so each pass is progress; the bound
# only guards against a bug.
MAX_PASSES = 50
# A transaction the database rolled back (serialisation failure, deadlock) is tried again
# this many times before the delivery is answered 503.
MAX_TRANSACTIONS = 3

_LATEST = select(*(RECORDINGS.c[name] for name in STORED_RUN_COLUMNS))
_EARLIER = select(*(RECORDINGS.c[name] for name in EARLIER_RUN_COLUMNS))


def _key_is(key: TrackKey) -> tuple[Any, ...]:
    return (
        RECORDINGS.c.session_id == key.session_id,
        RECORDINGS.c.participant_id == key.participant_id,
        RECORDINGS.c.kind == key.kind,
    )


def _earlier_of(key: TrackKey) -> Any:
    return _EARLIER.where(*_key_is(key), ~RECORDINGS.c.is_latest)


def _latest_of(key: TrackKey) -> Any:
    return (
        _LATEST.where(*_key_is(key), RECORDINGS.c.is_latest)
        # A row lock on PostgreSQL; SQLite renders no FOR UPDATE (BEGIN IMMEDIATE holds
        # the whole database already).
        .with_for_update()
    )


class LockedWriter:
    def __init__(
        self, engine: AsyncEngine, seam: AfterCommit, max_files: int | None = None
    ) -> None:
        self._engine = engine
        self._seam = seam
        self._max_files = max_files
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    async def record(self, delivery: Delivery) -> Committed:
        async with storage_faults():
            for attempt in range(1, MAX_TRANSACTIONS + 1):
                try:
                    async with self._engine.begin() as connection:
                        committed = await self.write(connection, delivery)
                    break
                except DBAPIError as exc:
                    # Class 40: the database rolled the transaction back; it may be retried.
                    if (sqlstate_of(exc) or "")[:2] != "40" or attempt == MAX_TRANSACTIONS:
                        raise
        self._seam.publish([committed])
        return committed

    async def write(self, connection: AsyncConnection, delivery: Delivery) -> Committed:
        """Write `delivery` in the transaction open on `connection` (the caller commits)."""
        if delivery.track is None:
            planned = plan_unapplied(delivery)
            event_id = await self._append(connection, event_values(planned, None))
            return Committed(delivery, planned.outcome, event_id, None)
        for _pass in range(MAX_PASSES):
            row = (await connection.execute(_latest_of(delivery.track))).mappings().first()
            base = None
            if row is not None:
                earlier = (
                    await connection.execute(_earlier_of(delivery.track))
                    if row["sequence"] > 1
                    else None
                )
                base = stored_run(dict(row), earlier.all() if earlier is not None else None)
            plan = plan_track(delivery.track, base, [delivery], self._max_files)
            committed = await self._execute(connection, plan)
            if committed is not None:
                return committed
        raise DatabaseUnavailable("the recording is being changed concurrently; retry")

    async def _execute(self, connection: AsyncConnection, plan: TrackPlan) -> Committed | None:
        """Write the plan (one delivery); None when a concurrent delivery created the track's
        first recording before us: then its row is there to lock."""
        ids: dict[Target, int | None] = {Target.NONE: None, Target.EARLIER: None}
        changes = plan.base_write is BaseWrite.UPDATE or plan.opened is not None
        txn = await transaction_number(connection) if changes else None
        if plan.base is not None:
            ids[Target.BASE] = plan.base.id
            where = RECORDINGS.c.id == plan.base.id
            if plan.base_write is BaseWrite.UPDATE:
                assert plan.base_state is not None
                await connection.execute(
                    update(RECORDINGS)
                    .where(where)
                    .values(
                        **state_values(plan.base_state),
                        is_latest=plan.base_is_latest,
                        version=RECORDINGS.c.version + 1,
                        change_txn=txn,
                    )
                )
            elif plan.base_write is BaseWrite.SUPERSEDE:
                await connection.execute(update(RECORDINGS).where(where).values(is_latest=False))
        if plan.opened is not None:
            opened: Insert = self._insert(RECORDINGS).values(
                **key_values(plan.key),
                **state_values(plan.opened),
                is_latest=True,
                version=1,
                change_txn=txn,
            )
            statement = opened.on_conflict_do_nothing().returning(  # type: ignore[attr-defined]
                RECORDINGS.c.id
            )
            ids[Target.OPENED] = (await connection.execute(statement)).scalar_one_or_none()
            if ids[Target.OPENED] is None:
                return None
        (planned,) = plan.events
        recording_id = (
            planned.earlier_id if planned.target is Target.EARLIER else ids[planned.target]
        )
        event_id = await self._append(connection, event_values(planned, recording_id))
        return Committed(
            planned.delivery,
            planned.outcome,
            event_id,
            recording_id,
            planned.before,
            planned.after,
            txn if planned.after is not None else None,
        )

    @staticmethod
    async def _append(connection: AsyncConnection, values: dict[str, Any]) -> int:
        statement = insert(EVENTS).values(values).returning(EVENTS.c.id)
        event_id: int = (await connection.execute(statement)).scalar_one()
        return event_id
