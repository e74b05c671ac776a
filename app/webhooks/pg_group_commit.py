"""PostgreSQL group commit: the webhooks that arrive together are written together.

Requests hand their decided-on-nothing-yet event to a `GroupCommitter` and wait. A writer
task takes whatever is queued (up to `MAX_BATCH`), reads the latest recording of every
key in one statement, decides each transition with the pure lifecycle fold, and writes
all recordings and log rows in one statement: one implicit transaction, one commit (one
WAL flush) for the whole group. Each waiting request is answered only after that commit.

A batch holds at most one event per key. Every write is checked against the `version`
that was read, exactly like the single-webhook fast path, so an event whose recording
changed in between is not written; it (like a second event for a key already in the
batch, or a whole batch that failed for a reason other than a lost connection) is
handed back as `None` and the caller applies it alone. The statement locks each row it
writes before it appends that key's log row, so per key the log's id order is still the
order in which events were applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import driver_connection
from app.core.errors import DatabaseLost
from app.recordings.lifecycle import Outcome, Status, transition
from app.recordings.repository import TIMESTAMP_COLUMNS, TrackKey
from app.webhooks.pg_fast_path import LatestRecording, latest_from_row
from app.webhooks.repository import TrackDelivery

logger = logging.getLogger(__name__)

MAX_BATCH = 64
WRITERS = 2  # two batches in flight: one is read while the other is written

_TIMESTAMPS = [TIMESTAMP_COLUMNS[status] for status in Status]

READ_LATEST_MANY = f"""
SELECT r.id, r.version, r.sequence, r.status, {", ".join("r." + c for c in _TIMESTAMPS)},
       r.created_at, r.updated_at, r.files::text AS files,
       r.event_fingerprints::text AS event_fingerprints,
       r.session_id, r.participant_id, r.kind
FROM recordings r
JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(session_id, participant_id, kind)
  ON r.session_id = k.session_id AND r.participant_id = k.participant_id AND r.kind = k.kind
WHERE r.is_latest
"""

_STATE_SET = ", ".join(
    f"{column} = i.{column}"
    for column in ["status", *_TIMESTAMPS, "updated_at", "files", "event_fingerprints"]
)
_NEW_COLUMNS = ", ".join(
    [
        "meeting_id", "session_id", "participant_id", "kind", "sequence", "created_at",
        "status", *_TIMESTAMPS, "updated_at", "files", "event_fingerprints",
    ]
)  # fmt: skip

# A group must not wait long on a row lock somebody else holds: every webhook in it would
# wait too. `lock_timeout` is set for this statement only (set_config is_local: its implicit
# transaction), before any row is touched (`items` depends on it); on timeout the group's
# webhooks are applied one by one, and only the locked key's webhook waits.
GROUP_LOCK_TIMEOUT = "200ms"

# A next run inherits the track's meetingId from the run before it, as on the other paths.
_OPENED_VALUES = [
    "coalesce(s.meeting_id, i.meeting_id)" if c == "meeting_id" else "i." + c
    for c in _NEW_COLUMNS.split(", ")
]

WRITE_MANY = f"""
WITH settings AS MATERIALIZED (
  SELECT set_config('lock_timeout', '{GROUP_LOCK_TIMEOUT}', true) AS lock_timeout
),
items AS (
  SELECT x.* FROM settings, json_to_recordset($1::json) AS x(
    idx int, op text, id bigint, version int,
    meeting_id text, session_id text, participant_id text, kind text,
    sequence int, created_at timestamptz, status text,
    {", ".join(f"{c} timestamptz" for c in _TIMESTAMPS)}, updated_at timestamptz,
    files json, event_fingerprints json,
    received_at timestamptz, webhook_type text, outcome text, fingerprint text, payload json)
),
updated AS (
  UPDATE recordings r SET {_STATE_SET}, version = r.version + 1
  FROM items i
  WHERE i.op = 'update' AND r.id = i.id AND r.version = i.version
  RETURNING i.idx, r.id
),
unchanged AS (
  SELECT i.idx, r.id FROM recordings r
  JOIN items i ON i.op = 'duplicate' AND r.id = i.id AND r.version = i.version
  FOR UPDATE OF r
),
superseded AS (
  UPDATE recordings r SET is_latest = false, version = r.version + 1
  FROM items i
  WHERE i.op = 'next' AND r.id = i.id AND r.version = i.version
  RETURNING i.idx, r.meeting_id
),
opened AS (
  INSERT INTO recordings (is_latest, version, {_NEW_COLUMNS})
  SELECT true, 1, {", ".join(_OPENED_VALUES)}
  FROM items i LEFT JOIN superseded s ON s.idx = i.idx
  WHERE i.op = 'first' OR s.idx IS NOT NULL
  ORDER BY i.idx
  ON CONFLICT DO NOTHING
  RETURNING id, session_id, participant_id, kind
),
written AS (
  SELECT idx, id FROM updated
  UNION ALL SELECT idx, id FROM unchanged
  UNION ALL
  SELECT i.idx, o.id FROM opened o
  JOIN items i ON i.op IN ('first', 'next') AND i.session_id = o.session_id
   AND i.participant_id = o.participant_id AND i.kind = o.kind
)
INSERT INTO webhook_events (received_at, webhook_type, meeting_id, session_id,
                            participant_id, kind, outcome, fingerprint, payload, recording_id)
SELECT i.received_at, i.webhook_type, i.meeting_id, i.session_id, i.participant_id, i.kind,
       i.outcome, i.fingerprint, i.payload, w.id
FROM items i JOIN written w ON w.idx = i.idx
ORDER BY i.idx
RETURNING id, recording_id, session_id, participant_id, kind
"""


@dataclass(frozen=True, slots=True)
class Applied:
    outcome: Outcome
    event_id: int
    recording_id: int


@dataclass(slots=True)
class _Pending:
    delivery: TrackDelivery
    answer: asyncio.Future[Applied | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def _item(
    index: int, delivery: TrackDelivery, latest: LatestRecording | None
) -> tuple[dict[str, Any], Outcome]:
    step = transition(latest.state if latest else None, delivery.event)
    state = step.recording
    if step.opened:
        op = "first" if latest is None else "next"
    else:
        op = "duplicate" if step.outcome is Outcome.DUPLICATE else "update"
    item: dict[str, Any] = {
        "idx": index,
        "op": op,
        "id": latest.id if latest else None,
        "version": latest.version if latest else None,
        "meeting_id": delivery.meeting_id,
        "session_id": delivery.key.session_id,
        "participant_id": delivery.key.participant_id,
        "kind": delivery.key.kind,
        "sequence": state.sequence,
        "created_at": state.created_at,
        "status": state.status.value,
        "updated_at": state.updated_at,
        "files": [dict(entry) for entry in state.files],
        "event_fingerprints": list(state.fingerprints),
        "received_at": delivery.event.received_at,
        "webhook_type": delivery.webhook_type,
        "outcome": step.outcome.value,
        "fingerprint": delivery.event.fingerprint,
        "payload": delivery.payload,
    }
    for status, column in TIMESTAMP_COLUMNS.items():
        item[column] = state.received.get(status)
    return item, step.outcome


def _answer(pending: _Pending, result: Applied | None) -> None:
    # A request that went away has cancelled its future; the others get the first answer.
    if not pending.answer.done():
        pending.answer.set_result(result)


class GroupCommitter:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._writers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._writers = [asyncio.create_task(self._write_forever()) for _ in range(WRITERS)]

    async def stop(self) -> None:
        """After the server has drained its requests: nothing is left waiting."""
        for writer in self._writers:
            writer.cancel()
        for writer in self._writers:
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def apply(self, delivery: TrackDelivery) -> Applied | None:
        """Written and committed with its group, or None: apply it alone."""
        pending = _Pending(delivery)
        self._queue.put_nowait(pending)
        return await pending.answer

    async def _write_forever(self) -> None:
        while True:
            group = [await self._queue.get()]
            while len(group) < MAX_BATCH and not self._queue.empty():
                group.append(self._queue.get_nowait())
            try:
                await self._write(group)
            except asyncio.CancelledError:
                for pending in group:
                    _answer(pending, None)
                raise
            except DatabaseLost as exc:
                for pending in group:
                    if not pending.answer.done():
                        pending.answer.set_exception(DatabaseLost(str(exc)))
            except asyncpg.exceptions.LockNotAvailableError:
                logger.info("group waited over %s on a row lock; applying one by one",
                            GROUP_LOCK_TIMEOUT)  # fmt: skip
                for pending in group:
                    _answer(pending, None)
            except Exception:
                logger.exception("group commit failed; applying its webhooks one by one")
                for pending in group:
                    _answer(pending, None)

    async def _write(self, group: list[_Pending]) -> None:
        batch: dict[TrackKey, _Pending] = {}
        for pending in group:
            key = pending.delivery.key
            if key in batch:
                _answer(pending, None)  # one event per key per group
            else:
                batch[key] = pending
        keys = list(batch)
        async with driver_connection(self._engine) as driver:
            rows = await driver.fetch(
                READ_LATEST_MANY,
                [k.session_id for k in keys],
                [k.participant_id for k in keys],
                [k.kind for k in keys],
            )
            latest = {
                TrackKey(r["session_id"], r["participant_id"], r["kind"]): latest_from_row(r)
                for r in rows
            }
            items = []
            outcomes: dict[TrackKey, Outcome] = {}
            for index, key in enumerate(keys):
                item, outcome = _item(index, batch[key].delivery, latest.get(key))
                items.append(item)
                outcomes[key] = outcome
            written = await driver.fetch(WRITE_MANY, orjson.dumps(items).decode())
        for row in written:
            key = TrackKey(row["session_id"], row["participant_id"], row["kind"])
            _answer(batch[key], Applied(outcomes[key], row["id"], row["recording_id"]))
        for pending in batch.values():
            _answer(pending, None)  # not written (its recording changed): apply it alone
