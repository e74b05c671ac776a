"""PostgreSQL group commit: the deliveries that arrive together are written together.

Requests hand their delivery to a `GroupWriter` and wait. A writer task takes whatever is
queued (up to `MAX_BATCH`), reads the latest recording of every track in it with one
statement, plans each track (several deliveries of one track are folded in arrival order),
and writes every recording and log row with one more: one implicit transaction, one
commit (one WAL flush) for the whole group. Each waiting request is answered after that
commit.

Every write is checked against the `version` that was read, so a track whose recording
changed in between (another process wrote it) is not written; its deliveries go round
once more, and then to the locked writer, as do the deliveries of a group that waited
too long on a row lock or failed for a reason other than the database being unavailable.
Each track always goes to the same writer task, so within a process two groups never race
for one track. The statement holds each recording row it writes before it appends that
track's log rows, so per track the log's id order is the order events were applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core import metrics
from app.core.errors import AppError, ServiceUnavailable
from app.ledger import group_sql
from app.ledger.engine import driver_connection
from app.ledger.faults import sqlstate_of, translate
from app.ledger.locked_writer import LockedWriter
from app.ledger.plan import (
    Delivery,
    PlannedEvent,
    Target,
    TrackPlan,
    event_values,
    plan_track,
    plan_unapplied,
)
from app.ledger.rows import key_values, state_values, stored_run
from app.ledger.seam import AfterCommit, Committed
from app.rules.lifecycle import TrackKey

logger = logging.getLogger(__name__)

MAX_BATCH = 64
WRITERS = 2  # two groups in flight: one is read while the other is written
ROUNDS = 2  # groups a delivery may try before the locked writer takes it
LOCK_TIMEOUT = "55P03"

_GROUP_SIZE = metrics.GROUP_SIZE
_FELL_BACK_NOT_WRITTEN = metrics.GROUP_FALLBACKS.labels("not_written")
_FELL_BACK_ALONE = metrics.GROUP_FALLBACKS.labels("group_failed")


class Again(Enum):
    """Why a delivery was not written by its group."""

    NEXT_GROUP = "next group"  # its track changed in between, or its plan was full
    ALONE = "alone"  # the group failed as a whole: the locked writer takes it


Answer = Committed | Again


@dataclass(slots=True)
class _Pending:
    delivery: Delivery
    answer: asyncio.Future[Answer] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def give(self, answer: Answer) -> None:
        # A request that went away has cancelled its future.
        if not self.answer.done():
            self.answer.set_result(answer)

    def fail(self, error: BaseException) -> None:
        if not self.answer.done():
            self.answer.set_exception(error)


class GroupWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        seam: AfterCommit,
        locked: LockedWriter,
        max_files: int | None = None,
    ) -> None:
        self._engine = engine
        self._seam = seam
        self._locked = locked
        self._max_files = max_files
        self._queues: list[asyncio.Queue[_Pending]] = [asyncio.Queue() for _ in range(WRITERS)]
        self._spread = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._write_forever(q)) for q in self._queues]

    async def stop(self) -> None:
        """After the server has drained its requests: nothing is left waiting."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def record(self, delivery: Delivery) -> Committed:
        for _round in range(ROUNDS):
            answer = await self._submit(delivery)
            if isinstance(answer, Committed):
                return answer
            if answer is Again.ALONE:
                _FELL_BACK_ALONE.inc()
                break
        else:
            _FELL_BACK_NOT_WRITTEN.inc()
        return await self._locked.record(delivery)

    async def _submit(self, delivery: Delivery) -> Answer:
        pending = _Pending(delivery)
        # One track, one writer task: its deliveries queue behind each other, in order.
        slot = hash(delivery.track) if delivery.track is not None else next(self._spread)
        self._queues[slot % WRITERS].put_nowait(pending)
        return await pending.answer

    async def _write_forever(self, queue: asyncio.Queue[_Pending]) -> None:
        while True:
            group = _take(queue, [await queue.get()])
            try:
                # One connection while groups keep coming: a pool checkout per group cost
                # about as much CPU as planning the group.
                async with driver_connection(self._engine) as driver:
                    while True:
                        committed = await self._write(driver, group)
                        _GROUP_SIZE.observe(len(committed))
                        self._seam.publish(committed)
                        if queue.empty():
                            break
                        group = _take(queue, [])
            except asyncio.CancelledError:
                for pending in group:
                    pending.give(Again.ALONE)
                raise
            except Exception as exc:
                self._fail(group, exc)

    @staticmethod
    def _fail(group: list[_Pending], exc: Exception) -> None:
        code = sqlstate_of(exc) or ""
        if code == LOCK_TIMEOUT or code[:2] == "40":
            # A row lock held elsewhere, or a deadlock between groups: each delivery alone,
            # so only the locked track's delivery waits.
            logger.info("group could not lock its rows (%s); writing one by one", code)
            answer: Answer = Again.ALONE
        else:
            error = translate(exc)
            if isinstance(error, ServiceUnavailable):
                for pending in group:
                    pending.fail(error)
                return
            answer = Again.ALONE  # a bug in the group's statement: each on its own
        for pending in group:
            pending.give(answer)

    async def _write(self, driver: asyncpg.Connection, group: list[_Pending]) -> list[Committed]:
        tracks: dict[TrackKey, list[_Pending]] = {}
        unapplied: list[_Pending] = []
        for pending in group:
            key = pending.delivery.track
            if key is None:
                unapplied.append(pending)
            else:
                tracks.setdefault(key, []).append(pending)
        bases = {}
        if tracks:
            keys = list(tracks)
            rows = await driver.fetch(
                group_sql.READ_LATEST,
                [key.session_id for key in keys],
                [key.participant_id for key in keys],
                [key.kind for key in keys],
            )
            runs = [stored_run(row, row["earlier"]) for row in rows]
            bases = {run.key: run for run in runs}
        plans = [
            plan_track(key, bases.get(key), [p.delivery for p in pendings], self._max_files)
            for key, pendings in tracks.items()
        ]
        batch = _Batch(plans, [plan_unapplied(p.delivery) for p in unapplied])
        result = await driver.fetch(group_sql.WRITE, *batch.parameters())
        return batch.answer(result, tracks, unapplied)


def _take(queue: asyncio.Queue[_Pending], group: list[_Pending]) -> list[_Pending]:
    """`group` and what is queued behind it, up to MAX_BATCH."""
    while len(group) < MAX_BATCH and not queue.empty():
        group.append(queue.get_nowait())
    return group


class _Batch:
    """One group's plans as the write statement's parameters, and its result as answers."""

    def __init__(self, plans: list[TrackPlan], unapplied: list[PlannedEvent]) -> None:
        self.plans = plans
        self.unapplied = unapplied

    def parameters(self) -> list[str]:
        bases: list[dict[str, Any]] = []
        openings: list[dict[str, Any]] = []
        entries: list[dict[str, Any]] = []
        for k, plan in enumerate(self.plans):
            if plan.base is not None:
                assert plan.base_write is not None and plan.base_state is not None
                bases.append(
                    {
                        "k": k,
                        "id": plan.base.id,
                        "version": plan.base.version,
                        "write": plan.base_write.value,
                        "is_latest": plan.base_is_latest,
                        "applied": plan.applied_to(Target.BASE),
                        **state_values(plan.base_state),
                    }
                )
            if plan.opened is not None:
                openings.append(
                    {
                        "k": k,
                        "needs_base": plan.base is not None,
                        "applied": plan.applied_to(Target.OPENED),
                        **key_values(plan.key),
                        **state_values(plan.opened),
                    }
                )
            for planned in plan.events:
                entries.append(self._entry(len(entries), k, planned, _known_id(plan, planned)))
        for planned in self.unapplied:
            entries.append(self._entry(len(entries), None, planned, None))
        return [
            group_sql.BASES.document(bases),
            group_sql.OPENINGS.document(openings),
            group_sql.ENTRIES.document(entries),
        ]

    @staticmethod
    def _entry(
        idx: int, k: int | None, planned: PlannedEvent, recording_id: int | None
    ) -> dict[str, Any]:
        return {
            "idx": idx,
            "k": k,
            "target": planned.target.value,
            **event_values(planned, recording_id),
        }

    def answer(
        self,
        result: Sequence[Any],
        tracks: dict[TrackKey, list[_Pending]],
        unapplied: list[_Pending],
    ) -> list[Committed]:
        """Hand every pending request its answer; returns what was committed, in log order."""
        opened_ids: dict[int, int | None] = {}
        logged: list[tuple[int, str]] = []
        txn: int | None = None
        for row in result:
            if row["part"] == "track":
                opened_ids[row["k"]] = row["id"]
            elif row["part"] == "event":
                logged.append((row["id"], row["fingerprint"]))
            elif row["part"] == "txn":
                txn = row["id"]
        # The rows were inserted in entry order, and ids are handed out in insert order.
        logged.sort()
        written: list[tuple[_Pending, PlannedEvent, int | None]] = []
        for k, (plan, pendings) in enumerate(zip(self.plans, tracks.values(), strict=True)):
            if k not in opened_ids:
                for pending in pendings:
                    pending.give(Again.NEXT_GROUP)
                continue
            for pending, planned in zip(pendings, plan.events, strict=False):
                recording_id = (
                    opened_ids[k] if planned.target is Target.OPENED else _known_id(plan, planned)
                )
                written.append((pending, planned, recording_id))
            for pending in pendings[len(plan.events) :]:
                pending.give(Again.NEXT_GROUP)
        written.extend(
            (p, planned, None) for p, planned in zip(unapplied, self.unapplied, strict=True)
        )
        if len(written) != len(logged):
            raise AppError(f"group wrote {len(logged)} log rows for {len(written)} deliveries")
        committed = []
        for (pending, planned, recording_id), (event_id, fingerprint) in zip(
            written, logged, strict=True
        ):
            assert fingerprint == planned.delivery.fingerprint, "log rows out of entry order"
            answer = Committed(
                planned.delivery,
                planned.outcome,
                event_id,
                recording_id,
                planned.before,
                planned.after,
                txn if planned.after is not None else None,
            )
            pending.give(answer)
            committed.append(answer)
        return committed


def _known_id(plan: TrackPlan, planned: PlannedEvent) -> int | None:
    """The recording a log row points at, when the plan knows it before writing (a run the
    plan opens gets its id from the statement)."""
    if planned.target is Target.BASE:
        assert plan.base is not None
        return plan.base.id
    return planned.earlier_id
