"""Fill the real tables fast with COPY: N recordings and M raw webhook events.

    python -m bench.loader --database-url postgresql://postgres@127.0.0.1:5432/db \
        --rows 1000000 --events 10000000

Sessions are laid out over the last 90 days, each with its participants and tracks, full
lifecycles (a few restarted, failed or still running), 1-2 files per stopped recording, ~5%
duplicate deliveries, and the other VideoSDK webhook types the intake logs as `ignored` to
make up the event count. Event ids follow arrival order across many overlapping sessions.
The invariants hold: one is_latest row per key, (session, participant, kind, sequence)
unique, every track event pointing at its recording. Secondary indexes and foreign keys
are dropped for the COPY and rebuilt after it (which checks them); then VACUUM ANALYZE.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from typing import Any

import asyncpg
import orjson

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
TYPE_PREFIX = "participant-track-recording-"
SPAN_SECONDS = 90 * 24 * 3600
RECORDINGS_PER_BATCH = 10_000
PARTICIPANTS = (1, 2, 2, 3, 3, 3, 4, 4, 5, 6, 8)  # per session, drawn uniformly
MEAN_RECORDINGS_PER_SESSION = 7.7  # what PARTICIPANTS and KINDS give, restarts included

RECORDING_COLUMNS = (
    "id", "meeting_id", "session_id", "participant_id", "kind", "sequence", "is_latest",
    "status", "starting_at", "started_at", "stopping_at", "stopped_at", "failed_at",
    "created_at", "updated_at", "files", "event_fingerprints", "version",
)  # fmt: skip
EVENT_COLUMNS = (
    "id", "received_at", "webhook_type", "meeting_id", "session_id", "participant_id",
    "kind", "outcome", "fingerprint", "recording_id", "payload", "error",
)  # fmt: skip
TABLES = {"recordings": RECORDING_COLUMNS, "webhook_events": EVENT_COLUMNS}


class SchemaChanged(RuntimeError):
    """The tables have a column the loader cannot fill; teach bench/loader.py about it."""


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


def _fingerprinted(document: dict[str, Any]) -> tuple[str, str]:
    """(payload text, fingerprint): the payload is stored with sorted keys, so one dump
    serves both (the intake fingerprints the sorted-key form)."""
    text = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    return text.decode(), hashlib.sha256(text).hexdigest()


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


class _Batch:
    """One batch of sessions: recording rows and event rows, id'd in creation and arrival
    order."""

    def __init__(self, plan: Plan, index: int) -> None:
        self.plan = plan
        self.rng = random.Random(plan.seed * 1_000_003 + index)
        self.target = plan.recordings_in(index)
        # Sessions follow each other in time across batches.
        self.session_index = int(index * RECORDINGS_PER_BATCH / MEAN_RECORDINGS_PER_SESSION)
        self.start = plan.now - SPAN_SECONDS - 3 * 3600  # the last runs end before now
        self.recordings: list[list[Any]] = []
        self.events: list[tuple[Any, ...]] = []
        self.carry = 0.0
        self.index = index

    def _hex(self, bits: int) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def build(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
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
                    ids = (meeting_id, session_id, participant_id, kind)
                    restart = rng.random() < 0.05 and len(recordings) + 2 <= self.target
                    runs = 2 if restart else 1
                    t = t0 + rng.random() * 600
                    for sequence in range(1, runs + 1):
                        t = self._recording(ids, sequence, sequence == runs, t)
                        t += 30 + rng.random() * 570
                    session_end = max(session_end, t)
            # Other webhook types fill the log up to the event target, in proportion to the
            # recordings made, so both targets are reached together.
            self.carry += plan.events_per_recording * (len(recordings) - recordings_before) - (
                len(events) - events_before
            )
            count = max(0, int(self.carry))
            self.carry = max(0.0, self.carry - count)
            self._filler(count, meeting_id, session_id, t0, session_end)

        recordings.sort(key=lambda r: r[13])  # created_at: ids in creation order
        first_recording = plan.first_recording_id + self.index * RECORDINGS_PER_BATCH
        for offset, row in enumerate(recordings):
            row[0] = first_recording + offset
        events.sort(key=lambda e: e[0])  # received_at: ids in arrival order
        if len(events) > plan.event_block:
            raise RuntimeError(f"batch {self.index} made {len(events)} events, more than its block")
        first_event = plan.first_event_id + self.index * plan.event_block
        fromtimestamp = datetime.fromtimestamp
        event_rows = [
            (
                first_event + offset, fromtimestamp(at, UTC), wtype, meeting, session,
                participant, kind, outcome, fp, None if rec is None else rec[0], payload, None,
            )
            for offset, (at, wtype, meeting, session, participant, kind, outcome, fp, rec, payload)
            in enumerate(events)
        ]  # fmt: skip
        return [self._recording_row(r) for r in recordings], event_rows

    def _recording(
        self, ids: tuple[str, str, str, str], sequence: int, is_latest: bool, t: float
    ) -> float:
        rng = self.rng
        meeting_id, session_id, participant_id, kind = ids
        roll = rng.random()
        if is_latest and roll < 0.03:
            statuses = ("starting", "started", "stopping")[: 1 + int(rng.random() * 3)]
        elif roll < 0.04:
            statuses = ("starting", "started", "failed")
        else:
            statuses = ("starting", "started", "stopping", "stopped")
        stamps: dict[str, float] = {}
        for status in statuses:
            if status == "started":
                t += 0.5 + rng.random() * 2.5
            elif status in ("stopping", "failed"):
                t += 60 + rng.random() * 5340
            elif status == "stopped":
                t += 2 + rng.random() * 18
            stamps[status] = t
        files: list[dict[str, str]] = []
        fingerprints: list[str] = []
        # The row in column order; the id (index 0) is set once ids are handed out, and
        # the events hold this very list so they pick that id up.
        record: list[Any] = [
            0, meeting_id, session_id, participant_id, kind, sequence, is_latest,
            statuses[-1], stamps.get("starting"), stamps.get("started"),
            stamps.get("stopping"), stamps.get("stopped"), stamps.get("failed"),
            stamps[statuses[0]], t, files, fingerprints,
        ]  # fmt: skip
        for status in statuses:
            data: dict[str, Any] = {
                "meetingId": meeting_id,
                "sessionId": session_id,
                "participantId": participant_id,
                "kind": kind,
            }
            if status == "stopped":
                for _ in range(2 if rng.random() < 0.25 else 1):
                    name = self._hex(96)
                    files.append({
                        "filePath": f"/encoded/videos/{name}.mp4",
                        "fileUrl": f"https://cdn.videosdk.live/encoded/videos/{name}.mp4",
                    })  # fmt: skip
                data["fileDetails"] = files
            wtype = TYPE_PREFIX + status
            payload, fp = _fingerprinted({"webhookType": wtype, "data": data})
            fingerprints.append(fp)
            at = stamps[status]
            self.events.append(
                (at, wtype, meeting_id, session_id, participant_id, kind, "applied", fp, record,
                 payload)
            )  # fmt: skip
            if rng.random() < 0.05:
                late = at + 0.2 + rng.random() * 30
                self.events.append(
                    (late, wtype, meeting_id, session_id, participant_id, kind, "duplicate", fp,
                     record, payload)
                )  # fmt: skip
        record.append(len(fingerprints))  # version: one write per applied event
        self.recordings.append(record)
        return t

    @staticmethod
    def _recording_row(r: list[Any]) -> tuple[Any, ...]:
        fromtimestamp = datetime.fromtimestamp
        stamps = [None if v is None else fromtimestamp(v, UTC) for v in r[8:15]]
        return (
            *r[:8], *stamps, orjson.dumps(r[15]).decode(), orjson.dumps(r[16]).decode(), r[17],
        )  # fmt: skip

    def _filler(
        self, count: int, meeting_id: str, session_id: str, start: float, end: float
    ) -> None:
        rng = self.rng
        span = max(1.0, end - start)
        for _ in range(count):
            wtype = OTHER_TYPES[int(rng.random() * len(OTHER_TYPES))]
            data: dict[str, Any] = {"meetingId": meeting_id, "sessionId": session_id}
            participant = None
            if wtype.startswith("participant"):
                participant = self._hex(32)
                data["participantId"] = participant
            payload, fp = _fingerprinted({"webhookType": wtype, "data": data})
            self.events.append(
                (start + rng.random() * span, wtype, meeting_id, session_id, participant, None,
                 "ignored", fp, None, payload)
            )  # fmt: skip


async def _columns(connection: asyncpg.Connection, table: str) -> list[dict[str, Any]]:
    rows = await connection.fetch(
        "SELECT column_name, is_nullable, column_default, is_identity "
        "FROM information_schema.columns WHERE table_name = $1 AND table_schema = current_schema()",
        table,
    )
    return [dict(row) for row in rows]


async def _check_schema(connection: asyncpg.Connection) -> dict[str, tuple[str, ...]]:
    """The columns to COPY per table; refuses a NOT NULL column it does not know."""
    chosen: dict[str, tuple[str, ...]] = {}
    for table, known in TABLES.items():
        columns = await _columns(connection, table)
        if not columns:
            raise SchemaChanged(f"table {table} is missing: migrate the database first")
        present = {c["column_name"] for c in columns}
        unknown_required = [
            c["column_name"]
            for c in columns
            if c["column_name"] not in known
            and c["is_nullable"] == "NO"
            and c["column_default"] is None
            and c["is_identity"] != "YES"
        ]
        if unknown_required:
            raise SchemaChanged(
                f"{table} has NOT NULL column(s) {unknown_required} that bench/loader.py does "
                "not fill; add them to its generator"
            )
        chosen[table] = tuple(c for c in known if c in present)
    return chosen


async def _detach(connection: asyncpg.Connection) -> list[str]:
    """Drop the foreign keys and non-constraint indexes touching our tables; return the
    statements that recreate them."""
    restore: list[str] = []
    fks = await connection.fetch(
        "SELECT conrelid::regclass::text AS rel, quote_ident(conname) AS name, "
        "pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE contype = 'f' AND "
        "(conrelid = ANY($1::regclass[]) OR confrelid = ANY($1::regclass[]))",
        list(TABLES),
    )
    indexes = await connection.fetch(
        "SELECT quote_ident(i.relname) AS name, pg_get_indexdef(i.oid) AS def "
        "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = ANY($1::regclass[]) AND NOT EXISTS ("
        "  SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid "
        "  AND c.conrelid = x.indrelid AND c.contype IN ('p', 'u', 'x'))",
        list(TABLES),
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
_worker: tuple[asyncio.AbstractEventLoop, asyncpg.Connection, Plan, dict[str, tuple[str, ...]]]


def _start_worker(dsn: str, plan: Plan, columns: dict[str, tuple[str, ...]]) -> None:
    global _worker
    loop = asyncio.new_event_loop()
    connection = loop.run_until_complete(asyncpg.connect(dsn, command_timeout=None))
    _worker = (loop, connection, plan, columns)


def _load_batch(index: int) -> tuple[int, int]:
    loop, connection, plan, columns = _worker
    recording_rows, event_rows = _Batch(plan, index).build()

    async def copy() -> None:
        # One transaction a batch: its events never exist without their recordings.
        async with connection.transaction():
            await _copy(connection, "recordings", columns["recordings"], recording_rows)
            await _copy(connection, "webhook_events", columns["webhook_events"], event_rows)

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
        columns = await _check_schema(connection)
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
        await connection.execute("SET maintenance_work_mem = '512MB'")
        restore = await _detach(connection)
        try:
            copy_started = time.perf_counter()
            last_log = copy_started
            with ProcessPoolExecutor(
                max_workers=workers or min(4, os.cpu_count() or 1),
                mp_context=get_context("spawn"),
                initializer=_start_worker,
                initargs=(dsn, plan, columns),
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
        for table in TABLES:
            await connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 1) FROM {table}))"
            )
        vacuum_started = time.perf_counter()
        # A long-lived table is vacuumed (visibility map, hint bits) and analysed.
        await connection.execute("VACUUM (ANALYZE) recordings, webhook_events")
        await connection.execute("CHECKPOINT")
        report.vacuum_analyze_s = time.perf_counter() - vacuum_started
    finally:
        await connection.close()
    report.total_s = time.perf_counter() - started
    return report


async def _copy(
    connection: asyncpg.Connection,
    table: str,
    columns: Sequence[str],
    records: list[tuple[Any, ...]],
) -> None:
    known = TABLES[table]
    if tuple(columns) != known:
        positions = [known.index(c) for c in columns]
        records = [tuple(r[i] for i in positions) for r in records]
    await connection.copy_records_to_table(table, records=records, columns=list(columns))


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
