"""The group writer's two PostgreSQL statements, with every column list derived from the
table definitions and the row mapping in `rows.py`.

Each set of input rows travels as one JSON document, read back with `json_to_recordset`: one
parameter instead of one typed array per column (asyncpg encoded the group's 54 arrays an
element at a time: 51 us of client CPU per webhook, 16 us this way). A `json` column's
value travels as a JSON string holding its text, cast to `json` after: PostgreSQL parses
the document with its escapes decoded, and a `\\u0000` anywhere in it (a payload may hold
one) would fail the whole group; as a string it stays the escaped text `\\\\u0000`, which
decodes to the six characters the column keeps. Bytes travel as base64, timestamps as
RFC 3339 text.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import JSON, Column, LargeBinary, Table
from sqlalchemy.dialects import postgresql

from app.ledger.clock import POSTGRESQL_TXN
from app.ledger.rows import EARLIER_RUN_COLUMNS, KEY_COLUMNS, STATE_COLUMNS, STORED_RUN_COLUMNS
from app.ledger.tables import EVENTS, RECORDINGS
from app.videosdk.documents import document_text

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]

# A group must not wait on a lock somebody else holds: every webhook in it would wait too.
# Rows held elsewhere are skipped (SKIP LOCKED; an advisory try-lock for a track's first
# run), and their tracks go round again. What cannot be skipped (a first run the locked
# writer is inserting at that moment) is bounded by `lock_timeout`, set for this statement
# only (set_config is_local: its implicit transaction) before any row is touched; on
# timeout the group's webhooks go to the locked writer one by one.
GROUP_LOCK_TIMEOUT = "200ms"


def _json_text(value: Any) -> str | None:
    return None if value is None else document_text(value)


def _base64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode()


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    sql_type: str
    encode: Callable[[Any], Any] | None = None
    # How the field travels in the document, and the SQL that makes it the column's type.
    wire_type: str | None = None
    convert: str = "{}"

    @property
    def declared(self) -> str:
        return f"{self.name} {self.wire_type or self.sql_type}"

    @property
    def selected(self) -> str:
        return f"{self.convert.format(self.name)} AS {self.name}"


def _column_fields(table: Table, names: Iterable[str]) -> tuple[_Field, ...]:
    fields = []
    for name in names:
        column: Column[Any] = table.c[name]
        sql_type = column.type.compile(dialect=_DIALECT)
        if isinstance(column.type, JSON):
            fields.append(_Field(name, sql_type, _json_text, "TEXT", "{}::json"))
        elif isinstance(column.type, LargeBinary):
            fields.append(_Field(name, sql_type, _base64, "TEXT", "decode({}, 'base64')"))
        else:
            fields.append(_Field(name, sql_type))
    return tuple(fields)


@dataclass(frozen=True, slots=True)
class RowsInput:
    """Rows of named values passed as one JSON parameter and read back as a relation."""

    alias: str
    fields: tuple[_Field, ...]

    def sql(self, parameter: int) -> str:
        declared = ", ".join(f.declared for f in self.fields)
        selected = ", ".join(f.selected for f in self.fields)
        return (
            f"(SELECT {selected} FROM json_to_recordset(${parameter}::json) AS x({declared}))"
            f" AS {self.alias}"
        )

    def document(self, rows: Sequence[Mapping[str, Any]]) -> str:
        """The rows (each with exactly this input's fields) as the parameter's text."""
        encoders = [(f.name, f.encode) for f in self.fields if f.encode is not None]
        encoded = []
        for row in rows:
            item = dict(row)
            for name, encode in encoders:
                item[name] = encode(item[name])
            encoded.append(item)
        return orjson.dumps(encoded, option=orjson.OPT_UTC_Z).decode()


_TRACK = _Field("k", "INTEGER")  # the track's index in the group

# The latest recording of each track, with the version the write must still find.
BASES = RowsInput(
    "b",
    (
        _TRACK,
        _Field("id", "BIGINT"),
        _Field("version", "INTEGER"),
        _Field("write", "TEXT"),
        _Field("is_latest", "BOOLEAN"),
        _Field("applied", "INTEGER"),
        *_column_fields(RECORDINGS, STATE_COLUMNS),
    ),
)
# The run each track opens; `needs_base`: only if its base recording was written.
OPENINGS = RowsInput(
    "o",
    (
        _TRACK,
        _Field("needs_base", "BOOLEAN"),
        _Field("applied", "INTEGER"),
        *_column_fields(RECORDINGS, (*KEY_COLUMNS, *STATE_COLUMNS)),
    ),
)
LOGGED_COLUMNS = tuple(c.name for c in EVENTS.c if c.name != "id")
# Log rows, in arrival order; `target` says which recording `recording_id` is.
ENTRIES = RowsInput(
    "e",
    (
        _Field("idx", "INTEGER"),
        _TRACK,
        _Field("target", "TEXT"),
        *_column_fields(EVENTS, LOGGED_COLUMNS),
    ),
)

# Each track's latest recording and, for a track with more than one run, its earlier runs
# (to tell a retry of their deliveries): one index probe more, only for those tracks.
# Lookups are LATERAL with a LIMIT (which the planner cannot flatten into a join), so each
# key is an index probe whatever the statistics: planned as a join, a connection that had
# prepared the statement while the table was small kept a hash join over a sequential scan
# of recordings, and the bench's intake fell by half as the table grew.
READ_LATEST = f"""
SELECT {", ".join("r." + name for name in STORED_RUN_COLUMNS)},
  CASE WHEN r.sequence > 1 THEN (
    SELECT json_agg(json_build_array({", ".join("e." + n for n in EARLIER_RUN_COLUMNS)}))
    FROM recordings e
    WHERE e.session_id = r.session_id AND e.participant_id = r.participant_id
      AND e.kind = r.kind AND NOT e.is_latest
  ) END AS earlier
FROM unnest($1::text[], $2::text[], $3::text[]) AS k(session_id, participant_id, kind)
CROSS JOIN LATERAL (
  SELECT {", ".join(STORED_RUN_COLUMNS)} FROM recordings r
  WHERE r.session_id = k.session_id AND r.participant_id = k.participant_id
    AND r.kind = k.kind AND r.is_latest
  LIMIT 1
) r
"""


def _write_statement() -> str:
    state_set = ", ".join(f"{name} = b.{name}" for name in STATE_COLUMNS)
    opened_columns = ", ".join((*KEY_COLUMNS, *STATE_COLUMNS))
    logged = ", ".join(
        "CASE WHEN e.target = 'opened' THEN w.opened_id ELSE e.recording_id END"
        if name == "recording_id"
        else f"e.{name}"
        for name in LOGGED_COLUMNS
    )
    return f"""
WITH settings AS MATERIALIZED (
  SELECT set_config('lock_timeout', '{GROUP_LOCK_TIMEOUT}', true) AS lock_timeout
),
base AS (SELECT b.* FROM settings, {BASES.sql(1)}),
-- The base rows still at the version read, locked; a row another transaction holds is
-- skipped, not waited for: its track goes round again, and the rest of the group goes on.
-- (LATERAL: one primary key probe per row, whatever the statistics; see READ_LATEST.)
held AS MATERIALIZED (
  SELECT b.k FROM base b
  CROSS JOIN LATERAL (
    SELECT r.id FROM recordings r
    WHERE r.id = b.id AND r.version = b.version AND r.is_latest
    LIMIT 1
    FOR UPDATE SKIP LOCKED
  ) r
),
updated AS (
  UPDATE recordings r
  SET {state_set}, is_latest = b.is_latest, version = r.version + b.applied,
      change_txn = {POSTGRESQL_TXN}
  FROM base b JOIN held h ON h.k = b.k
  WHERE b.write = 'update' AND r.id = b.id
  RETURNING b.k
),
superseded AS (
  UPDATE recordings r SET is_latest = false
  FROM base b JOIN held h ON h.k = b.k
  WHERE b.write = 'supersede' AND r.id = b.id
  RETURNING b.k
),
based AS (
  SELECT k FROM updated UNION ALL SELECT k FROM superseded
  UNION ALL SELECT b.k FROM base b JOIN held h ON h.k = b.k WHERE b.write = 'hold'
),
fresh AS (SELECT o.* FROM settings, {OPENINGS.sql(2)}),
opened AS (
  INSERT INTO recordings ({opened_columns}, is_latest, version, change_txn)
  SELECT {", ".join("o." + name for name in (*KEY_COLUMNS, *STATE_COLUMNS))}, true, o.applied,
         {POSTGRESQL_TXN}
  FROM fresh o
  -- A track's first run: another process inserting it right now holds the same advisory
  -- lock, and the track goes round again instead of waiting for that insert.
  WHERE CASE WHEN o.needs_base THEN o.k IN (SELECT k FROM based)
        ELSE pg_try_advisory_xact_lock(hashtextextended(
          o.session_id || chr(31) || o.participant_id || chr(31) || o.kind, 0))
        END
  ORDER BY o.k
  ON CONFLICT DO NOTHING
  RETURNING id, session_id, participant_id, kind
),
written AS (
  SELECT b.k, NULL::bigint AS opened_id FROM based b WHERE b.k NOT IN (SELECT k FROM fresh)
  UNION ALL
  SELECT o.k, n.id FROM opened n
  JOIN fresh o
    ON o.session_id = n.session_id AND o.participant_id = n.participant_id AND o.kind = n.kind
),
logged AS (
  INSERT INTO webhook_events ({", ".join(LOGGED_COLUMNS)})
  SELECT {logged}
  FROM {ENTRIES.sql(3)}
  LEFT JOIN written w ON w.k = e.k
  -- a track's rows (a rejection too: it was decided on the track's read) need its writes
  WHERE e.k IS NULL OR w.k IS NOT NULL
  ORDER BY e.idx
  RETURNING id, fingerprint
),
-- Never commit a track whose latest run was superseded without its successor (it cannot
-- happen while the base row is held; a failed division aborts the whole statement).
broken AS (
  SELECT 1 / (b.k * 0) AS never FROM based b
  WHERE b.k IN (SELECT k FROM fresh) AND b.k NOT IN (SELECT k FROM written)
)
SELECT 'event' AS part, id, NULL::int AS k, fingerprint FROM logged
UNION ALL SELECT 'track', opened_id, k, NULL FROM written
UNION ALL SELECT 'txn', {POSTGRESQL_TXN}, NULL, NULL
UNION ALL SELECT 'broken', never, NULL, NULL FROM broken
"""


WRITE = _write_statement()
