"""Fill the real tables fast with COPY: N recordings and M raw webhook events.

    python -m bench.loader --database-url postgresql://postgres@127.0.0.1:5432/db \
        --rows 1000000 --events 10000000

Sessions are laid out over the last 90 days, each with its participants and tracks, full
lifecycles (a few restarted, failed or still running), 1-2 files per stopped recording, ~5%
duplicate deliveries, and the other VideoSDK webhook types the intake logs as `ignored` to
make up the event count. Event ids follow arrival order across many overlapping sessions.

The rows are what the service would have written: each generated document is mapped and
fingerprinted as intake maps it, each track's deliveries are folded in arrival order by the
lifecycle rules, and states and log rows become columns through the ledger's own mappings.
The COPY column lists are the tables' columns; one a mapping does not fill stops the loader
before it writes anything (`SchemaChanged`). The invariants hold: one is_latest row per key,
(session, participant, kind, sequence) unique, every track event pointing at its recording.
Secondary indexes and foreign keys are dropped for the COPY and rebuilt after it (which
checks them); then VACUUM ANALYZE.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from multiprocessing import get_context
from operator import itemgetter
from typing import Any

import asyncpg
import orjson
from sqlalchemy import JSON, Table

from app.ledger.plan import Delivery, PlannedEvent, Target, event_values, plan_unapplied
from app.ledger.rows import key_values, state_values
from app.ledger.tables import EVENTS, RECORDINGS
from app.rules.lifecycle import (
    Outcome,
    RecordingState,
    Status,
    TrackEvent,
    TrackFold,
    TrackKey,
)
from app.videosdk.documents import (
    EventIdentity,
    fingerprint_of,
    identity_of,
    track_event_of,
    track_key_of,
)
from app.videosdk.schemas import TRACK_WEBHOOK_TYPES, track_webhook_adapter

KINDS = (("audio", 0.95), ("video", 0.85), ("screen_video", 0.08), ("screen_audio", 0.04))
OTHER_TYPES = (
    "session-started",
    "session-ended",
    "participant-joined",
    "participant-left",
    "recording-started",
    "recording-stopped",
    "hls-started",
    "hls-stopped",
    "livestream-started",
)
WEBHOOK_TYPE_OF = {status: webhook_type for webhook_type, status in TRACK_WEBHOOK_TYPES.items()}
SPAN_SECONDS = 90 * 24 * 3600
RECORDINGS_PER_BATCH = 10_000
PARTICIPANTS = (1, 2, 2, 3, 3, 3, 4, 4, 5, 6, 8)  # per session, drawn uniformly
MEAN_RECORDINGS_PER_SESSION = 7.7  # what PARTICIPANTS and KINDS give, restarts included

# `change_txn` is the writing transaction's pg_current_xact_id(); loaded rows are older
# than anything the service writes, so any smaller value does.
LOADED_CHANGE_TXN = 1


class SchemaChanged(RuntimeError):
    """The tables, or how the app maps a delivery, changed in a way the loader does not
    follow (a column it cannot fill, say); teach bench/loader.py about it."""


@dataclass(slots=True)
class _Run:
    """A generated recording: its state as the fold left it, and its bookkeeping."""

    key: TrackKey
    state: RecordingState
    applied: int = 0  # events applied to it: each was one write
    is_latest: bool = False
    id: int = 0  # handed out once the batch's recordings are in creation order


# Bookkeeping: the columns that hold neither a recording's key and state nor a delivery,
# filled here and only here, one line each. A name its table does not have (yet) is left
# out of the COPY, so `change_txn` is filled once its migration has landed.
def _recording_bookkeeping(run: _Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "is_latest": run.is_latest,
        "version": run.applied,  # one write per applied event, as if each came on its own
        "change_txn": LOADED_CHANGE_TXN,
    }


def _event_bookkeeping(event_id: int) -> dict[str, Any]:
    return {"id": event_id}


def _recording_values(run: _Run) -> dict[str, Any]:
    return {**key_values(run.key), **state_values(run.state), **_recording_bookkeeping(run)}


def _event_values(event_id: int, planned: PlannedEvent, run: _Run | None) -> dict[str, Any]:
    values = event_values(planned, None if run is None else run.id)
    values.update(_event_bookkeeping(event_id))
    return values


class _Columns:
    """Every column of a table, in table order: the COPY's column list, and a row of
    values mapped to it."""

    def __init__(self, table: Table) -> None:
        self.table = table.name
        self.names = tuple(column.name for column in table.c)
        self._pick = itemgetter(*self.names)
        self._json = tuple(i for i, column in enumerate(table.c) if isinstance(column.type, JSON))

    def row(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        try:
            row = list(self._pick(values))
        except KeyError as exc:
            raise SchemaChanged(
                f"column {self.table}.{exc.args[0]} is not filled by bench/loader.py: the "
                "app's mappings (app/ledger/rows.py, app/ledger/plan.py) do not give it; if "
                "it is bookkeeping, add it to the loader's bookkeeping functions"
            ) from None
        for i in self._json:
            # asyncpg's json codec takes text; the service's writers send orjson's too.
            row[i] = None if row[i] is None else orjson.dumps(row[i]).decode()
        return tuple(row)


COLUMNS = {table.name: _Columns(table) for table in (RECORDINGS, EVENTS)}
RECORDING_COLUMNS = COLUMNS[RECORDINGS.name]
EVENT_COLUMNS = COLUMNS[EVENTS.name]


@dataclass
class LoadReport:
    recordings: int = 0
    events: int = 0
    copy_s: float = 0.0
    rebuild_s: float = 0.0
    vacuum_analyze_s: float = 0.0
    total_s: float = 0.0
    rebuilt: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        rows = self.recordings + self.events
        return {
            "recordings": self.recordings,
            "events": self.events,
            "copy_s": round(self.copy_s, 1),
            "index_and_fk_rebuild_s": round(self.rebuild_s, 1),
            "vacuum_analyze_s": round(self.vacuum_analyze_s, 1),
            "total_s": round(self.total_s, 1),
            "copy_rows_per_s": round(rows / self.copy_s) if self.copy_s else 0,
            "overall_rows_per_s": round(rows / self.total_s) if self.total_s else 0,
            "rebuilt": self.rebuilt,
        }


@dataclass(frozen=True)
class Plan:
    """How the rows are cut into batches, so that worker processes can generate and COPY
    batches independently: batch b owns a fixed block of recording ids and of event ids
    (event ids leave gaps between blocks, as sequences do)."""

    rows: int
    events: int
    seed: int
    first_recording_id: int
    first_event_id: int
    now: float

    @property
    def batches(self) -> int:
        return -(-self.rows // RECORDINGS_PER_BATCH)

    @property
    def events_per_recording(self) -> float:
        return self.events / max(1, self.rows)

    @property
    def event_block(self) -> int:
        # Track events alone are ~4.2 a recording; room for both and a margin.
        return int(max(self.events_per_recording, 5.0) * RECORDINGS_PER_BATCH * 1.5) + 10_000

    @property
    def session_step(self) -> float:
        return SPAN_SECONDS / max(1.0, self.rows / MEAN_RECORDINGS_PER_SESSION)

    def recordings_in(self, batch: int) -> int:
        return min(RECORDINGS_PER_BATCH, self.rows - batch * RECORDINGS_PER_BATCH)


# A delivery of the batch: (arrival time, the log row's plan, the recording it points at).
_Logged = tuple[float, PlannedEvent, _Run | None]


@dataclass(frozen=True, slots=True)
class _Track:
    """A participant's track, and the ids every delivery for it names (`identity_of` reads
    nothing else, so one call serves them all)."""

    key: TrackKey
    meeting_id: str
    identity: EventIdentity


class _Batch:
    """One batch of sessions: recording rows and event rows, id'd in creation and arrival
    order. With `check`, every track delivery is also mapped by intake's own code, which
    must agree with the loader's shortcut (see `_check_mapping`)."""

    def __init__(self, plan: Plan, index: int, check: bool = False) -> None:
        self.plan = plan
        self.rng = random.Random(plan.seed * 1_000_003 + index)
        self.target = plan.recordings_in(index)
        # Sessions follow each other in time across batches.
        self.session_index = int(index * RECORDINGS_PER_BATCH / MEAN_RECORDINGS_PER_SESSION)
        self.start = plan.now - SPAN_SECONDS - 3 * 3600  # the last runs end before now
        self.recordings: list[_Run] = []
        self.events: list[_Logged] = []
        self.carry = 0.0
        self.index = index
        self.check = check

    def _hex(self, bits: int) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def build(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        # A batch is a large heap without reference cycles: the cycle collector would only
        # walk it over and over (a quarter of the time).
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._build()
        finally:
            if gc_was_enabled:
                gc.enable()

    def _build(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        rng = self.rng
        plan = self.plan
        recordings, events = self.recordings, self.events
        while len(recordings) < self.target:
            step = plan.session_step
            t0 = self.start + self.session_index * step + rng.random() * step
            self.session_index += 1
            meeting = self._hex(48)
            meeting_id = f"{meeting[:4]}-{meeting[4:8]}-{meeting[8:]}"
            session_id = self._hex(96)
            session_end = t0
            recordings_before, events_before = len(recordings), len(events)
            for _p in range(PARTICIPANTS[int(rng.random() * len(PARTICIPANTS))]):
                participant_id = self._hex(32)
                kinds = [kind for kind, odds in KINDS if rng.random() < odds] or ["audio"]
                for kind in kinds:
                    if len(recordings) >= self.target:
                        break
                    ids = {
                        "meetingId": meeting_id,
                        "sessionId": session_id,
                        "participantId": participant_id,
                        "kind": kind,
                    }
                    track = _Track(
                        TrackKey(session_id, participant_id, kind),
                        meeting_id,
                        identity_of({"data": ids}),
                    )
                    restart = rng.random() < 0.05 and len(recordings) + 2 <= self.target
                    runs = 2 if restart else 1
                    t = t0 + rng.random() * 600
                    deliveries: list[tuple[float, Delivery]] = []
                    for number in range(1, runs + 1):
                        t = self._lifecycle(track, ids, number == runs, t, deliveries)
                        t += 30 + rng.random() * 570
                    self._fold(deliveries)
                    session_end = max(session_end, t)
            # Other webhook types fill the log up to the event target, in proportion to the
            # recordings made, so both targets are reached together.
            self.carry += plan.events_per_recording * (len(recordings) - recordings_before) - (
                len(events) - events_before
            )
            count = max(0, int(self.carry))
            self.carry = max(0.0, self.carry - count)
            self._filler(count, meeting_id, session_id, t0, session_end)

        recordings.sort(key=lambda run: run.state.created_at)  # ids in creation order
        first_recording = plan.first_recording_id + self.index * RECORDINGS_PER_BATCH
        for offset, run in enumerate(recordings):
            run.id = first_recording + offset
        events.sort(key=lambda logged: logged[0])  # ids in arrival order
        if len(events) > plan.event_block:
            raise RuntimeError(f"batch {self.index} made {len(events)} events, more than its block")
        first_event = plan.first_event_id + self.index * plan.event_block
        recording_row, event_row = RECORDING_COLUMNS.row, EVENT_COLUMNS.row
        return (
            [recording_row(_recording_values(run)) for run in recordings],
            [
                event_row(_event_values(first_event + offset, planned, run))
                for offset, (_at, planned, run) in enumerate(events)
            ],
        )

    def _lifecycle(
        self,
        track: _Track,
        ids: dict[str, str],
        last_run: bool,
        t: float,
        deliveries: list[tuple[float, Delivery]],
    ) -> float:
        """One start-to-stop run's deliveries (and their exact repeats); returns its end."""
        rng = self.rng
        roll = rng.random()
        statuses: tuple[Status, ...]
        if last_run and roll < 0.03:
            statuses = (Status.STARTING, Status.STARTED, Status.STOPPING)[
                : 1 + int(rng.random() * 3)
            ]
        elif roll < 0.04:
            statuses = (Status.STARTING, Status.STARTED, Status.FAILED)
        else:
            statuses = (Status.STARTING, Status.STARTED, Status.STOPPING, Status.STOPPED)
        stamps: dict[Status, float] = {}
        for status in statuses:
            if status is Status.STARTED:
                t += 0.5 + rng.random() * 2.5
            elif status in (Status.STOPPING, Status.FAILED):
                t += 60 + rng.random() * 5340
            elif status is Status.STOPPED:
                t += 2 + rng.random() * 18
            stamps[status] = t
        for status in statuses:
            data: dict[str, Any] = dict(ids)
            files: list[dict[str, str]] = []
            if status is Status.STOPPED:
                for _ in range(2 if rng.random() < 0.25 else 1):
                    name = self._hex(96)
                    files.append({
                        "filePath": f"/encoded/videos/{name}.mp4",
                        "fileUrl": f"https://cdn.videosdk.live/encoded/videos/{name}.mp4",
                    })  # fmt: skip
                data["fileDetails"] = files
            document = {"webhookType": WEBHOOK_TYPE_OF[status], "data": data}
            fingerprint = fingerprint_of(document)
            at = stamps[status]
            deliveries.append((at, self._delivery(track, status, files, document, fingerprint, at)))
            if rng.random() < 0.05:  # VideoSDK delivers it again, byte for byte
                late = at + 0.2 + rng.random() * 30
                deliveries.append(
                    (late, self._delivery(track, status, files, document, fingerprint, late))
                )
        return t

    def _delivery(
        self,
        track: _Track,
        status: Status,
        files: list[dict[str, str]],
        document: dict[str, Any],
        fingerprint: str,
        at: float,
    ) -> Delivery:
        """A generated track webhook as intake hands it to the ledger. Intake validates the
        document first (with pydantic, most of the cost here): the loader builds the same
        event from what it generated, and a checked batch proves it is the same."""
        received_at = datetime.fromtimestamp(at, UTC)
        delivery = Delivery(
            received_at=received_at,
            webhook_type=document["webhookType"],
            identity=track.identity,
            fingerprint=fingerprint,
            payload=document,
            body=orjson.dumps(document),  # the compact JSON a sender posts (unsigned here)
            track=track.key,
            event=TrackEvent(
                status, fingerprint, received_at, tuple(files), meeting_id=track.meeting_id
            ),
        )
        if self.check:
            _check_mapping(delivery)
        return delivery

    def _fold(self, deliveries: list[tuple[float, Delivery]]) -> None:
        """One track's deliveries applied in arrival order, as the service applies them:
        the recordings they leave, and each one's outcome and recording."""
        deliveries.sort(key=lambda delivery: delivery[0])
        runs: list[_Run] = []
        track = TrackFold()
        for at, delivery in deliveries:
            assert delivery.track is not None and delivery.event is not None
            step = track.apply(delivery.event)
            if step.opened:
                runs.append(_Run(delivery.track, step.recording))
            run = runs[step.sequence - 1]  # a retry of an earlier run's delivery is that run's
            run.state = track.recordings[step.sequence - 1]
            if step.outcome is Outcome.APPLIED:
                run.applied += 1
            target = Target.OPENED if step.opened else Target.BASE
            self.events.append((at, PlannedEvent(delivery, step.outcome, target), run))
        runs[-1].is_latest = True
        self.recordings.extend(runs)

    def _filler(
        self, count: int, meeting_id: str, session_id: str, start: float, end: float
    ) -> None:
        rng = self.rng
        span = max(1.0, end - start)
        # The ids a delivery names are all `identity_of` reads: those naming only the
        # session share one.
        session_identity = identity_of({"data": {"meetingId": meeting_id, "sessionId": session_id}})
        for _ in range(count):
            webhook_type = OTHER_TYPES[int(rng.random() * len(OTHER_TYPES))]
            data: dict[str, Any] = {"meetingId": meeting_id, "sessionId": session_id}
            identity = session_identity
            document = {"webhookType": webhook_type, "data": data}
            if webhook_type.startswith("participant"):
                data["participantId"] = self._hex(32)
                identity = identity_of(document)
            at = start + rng.random() * span
            delivery = Delivery(
                received_at=datetime.fromtimestamp(at, UTC),
                webhook_type=webhook_type,
                identity=identity,
                fingerprint=fingerprint_of(document),
                payload=document,
                body=orjson.dumps(document),
            )
            self.events.append((at, plan_unapplied(delivery), None))


def _check_mapping(delivery: Delivery) -> None:
    """Refuses a track delivery that intake would map otherwise (app/videosdk/documents.py
    changed): the rows would no longer be what the service writes."""
    document = dict(delivery.payload)
    webhook = track_webhook_adapter.validate_python(document)
    intake = (
        identity_of(document),
        track_key_of(webhook),
        track_event_of(webhook, delivery.fingerprint, delivery.received_at),
    )
    if intake != (delivery.identity, delivery.track, delivery.event):
        raise SchemaChanged(
            f"intake maps {delivery.webhook_type} to {intake}, bench/loader.py to "
            f"{(delivery.identity, delivery.track, delivery.event)}: teach the loader"
        )


async def _columns(connection: asyncpg.Connection, table: str) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        "SELECT column_name, is_nullable, column_default, is_identity "
        "FROM information_schema.columns WHERE table_name = $1 AND table_schema = current_schema()",
        table,
    )
    return [dict(row) for row in rows]


async def _check_schema(connection: asyncpg.Connection, plan: Plan) -> None:
    """Refuses, before anything is written, a column the loader would not fill: one of the
    tables' that the app's mappings do not give (tried on a sample batch, whose track
    deliveries are also mapped by intake's code), one the database lacks, or a NOT NULL one
    the database has and the tables do not."""
    _Batch(replace(plan, rows=100, events=1000), 0, check=True).build()
    for columns in COLUMNS.values():
        found = await _columns(connection, columns.table)
        if not found:
            raise SchemaChanged(f"table {columns.table} is missing: migrate the database first")
        present = {c["column_name"] for c in found}
        if missing := [name for name in columns.names if name not in present]:
            raise SchemaChanged(
                f"{columns.table} lacks column(s) {missing} of app/ledger/tables.py: "
                "migrate the database first"
            )
        unknown_required = [
            c["column_name"]
            for c in found
            if c["column_name"] not in columns.names
            and c["is_nullable"] == "NO"
            and c["column_default"] is None
            and c["is_identity"] != "YES"
        ]
        if unknown_required:
            raise SchemaChanged(
                f"{columns.table} has NOT NULL column(s) {unknown_required} that "
                "app/ledger/tables.py does not declare, so bench/loader.py cannot fill them"
            )


async def _detach(connection: asyncpg.Connection) -> list[str]:
    """Drop the foreign keys and non-constraint indexes touching our tables; return the
    statements that recreate them."""
    restore: list[str] = []
    fks = await connection.fetch(
        "SELECT conrelid::regclass::text AS rel, quote_ident(conname) AS name, "
        "pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE contype = 'f' AND "
        "(conrelid = ANY($1::regclass[]) OR confrelid = ANY($1::regclass[]))",
        list(COLUMNS),
    )
    indexes = await connection.fetch(
        "SELECT quote_ident(i.relname) AS name, pg_get_indexdef(i.oid) AS def "
        "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = ANY($1::regclass[]) AND NOT EXISTS ("
        "  SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid "
        "  AND c.conrelid = x.indrelid AND c.contype IN ('p', 'u', 'x'))",
        list(COLUMNS),
    )
    async with connection.transaction():
        for fk in fks:
            await connection.execute(f"ALTER TABLE {fk['rel']} DROP CONSTRAINT {fk['name']}")
        for index in indexes:
            await connection.execute(f"DROP INDEX {index['name']}")
    restore.extend(index["def"] for index in indexes)
    restore.extend(f"ALTER TABLE {fk['rel']} ADD CONSTRAINT {fk['name']} {fk['def']}" for fk in fks)
    return restore


# Each worker process generates whole batches and COPYs them on its own connection.
_worker: tuple[asyncio.AbstractEventLoop, asyncpg.Connection, Plan]


def _start_worker(dsn: str, plan: Plan) -> None:
    global _worker
    loop = asyncio.new_event_loop()
    connection = loop.run_until_complete(asyncpg.connect(dsn, command_timeout=None))
    _worker = (loop, connection, plan)


def _load_batch(index: int) -> tuple[int, int]:
    loop, connection, plan = _worker
    recording_rows, event_rows = _Batch(plan, index).build()

    async def copy() -> None:
        # One transaction a batch: its events never exist without their recordings.
        async with connection.transaction():
            await _copy(connection, RECORDING_COLUMNS, recording_rows)
            await _copy(connection, EVENT_COLUMNS, event_rows)

    loop.run_until_complete(copy())
    return len(recording_rows), len(event_rows)


async def load(
    dsn: str,
    rows: int,
    events: int,
    *,
    seed: int = 1,
    workers: int | None = None,
    log: Callable[[str], None] = print,
) -> LoadReport:
    report = LoadReport()
    started = time.perf_counter()
    connection = await asyncpg.connect(dsn, command_timeout=None)
    try:
        # Start after whatever the service wrote already.
        plan = Plan(
            rows=rows,
            events=events,
            seed=seed,
            first_recording_id=1
            + int(await connection.fetchval("SELECT coalesce(max(id), 0) FROM recordings")),
            first_event_id=1
            + int(await connection.fetchval("SELECT coalesce(max(id), 0) FROM webhook_events")),
            now=time.time(),
        )
        await _check_schema(connection, plan)
        await connection.execute("SET maintenance_work_mem = '512MB'")
        restore = await _detach(connection)
        try:
            copy_started = time.perf_counter()
            last_log = copy_started
            with ProcessPoolExecutor(
                max_workers=workers or min(4, os.cpu_count() or 1),
                mp_context=get_context("spawn"),
                initializer=_start_worker,
                initargs=(dsn, plan),
            ) as pool:
                loop = asyncio.get_running_loop()
                futures = [
                    loop.run_in_executor(pool, _load_batch, index) for index in range(plan.batches)
                ]
                for finished in asyncio.as_completed(futures):
                    made_recordings, made_events = await finished
                    report.recordings += made_recordings
                    report.events += made_events
                    now = time.perf_counter()
                    if now - last_log > 10:
                        last_log = now
                        done = report.recordings + report.events
                        log(
                            f"  loader: {report.recordings:,} recordings, {report.events:,} "
                            f"events ({done / (now - copy_started):,.0f} rows/s)"
                        )
            report.copy_s = time.perf_counter() - copy_started
        finally:
            rebuild_started = time.perf_counter()
            for statement in restore:
                await connection.execute(statement)
            report.rebuild_s = time.perf_counter() - rebuild_started
            report.rebuilt = restore
        for table in COLUMNS:
            await connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 1) FROM {table}))"
            )
        vacuum_started = time.perf_counter()
        # A long-lived table is vacuumed (visibility map, hint bits) and analysed.
        await connection.execute(f"VACUUM (ANALYZE) {', '.join(COLUMNS)}")
        await connection.execute("CHECKPOINT")
        report.vacuum_analyze_s = time.perf_counter() - vacuum_started
    finally:
        await connection.close()
    report.total_s = time.perf_counter() - started
    return report


async def _copy(
    connection: asyncpg.Connection, columns: _Columns, records: list[tuple[Any, ...]]
) -> None:
    await connection.copy_records_to_table(
        columns.table, records=records, columns=list(columns.names)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--rows", type=int, default=1_000_000, help="recordings")
    parser.add_argument("--events", type=int, default=10_000_000, help="webhook events")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    from bench.database import plain_dsn

    report = asyncio.run(load(plain_dsn(args.database_url), args.rows, args.events, seed=args.seed))
    print(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
