"""How close together each track's deliveries of one saturation run arrived, and how many
were committed together with another delivery of their track: the check that the `bursts`
order does what it says (its deliveries meet in one write group), and that `spread` does not.

`received_at` is the time the service took the delivery in; `xmin` is the transaction that
wrote the log row (the log is append-only, so it is never rewritten), one per write group.
"""

from __future__ import annotations

from typing import Any

import asyncpg

LAST_EVENT_ID = "SELECT coalesce(max(id), 0) FROM webhook_events"

ARRIVALS = """
WITH per_commit AS (
  SELECT session_id, participant_id, kind, count(*) AS n,
         min(received_at) AS first_at, max(received_at) AS last_at
  FROM webhook_events
  WHERE id > $1 AND session_id IS NOT NULL
  GROUP BY session_id, participant_id, kind, xmin::text
), per_track AS (
  SELECT sum(n) AS events, coalesce(sum(n) FILTER (WHERE n > 1), 0) AS together,
         extract(epoch FROM max(last_at) - min(first_at)) * 1000 AS spread_ms
  FROM per_commit
  GROUP BY session_id, participant_id, kind
)
SELECT coalesce(sum(events), 0) AS deliveries,
       count(*) FILTER (WHERE events > 1) AS tracks,
       coalesce(sum(events) FILTER (WHERE events > 1), 0) AS track_deliveries,
       coalesce(sum(together), 0) AS together,
       percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY spread_ms)
         FILTER (WHERE events > 1) AS spread_ms
FROM per_track
"""


async def last_event_id(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval(LAST_EVENT_ID))
    finally:
        await connection.close()


async def arrivals(dsn: str, after_id: int) -> dict[str, Any]:
    """Over the log rows after `after_id`, the tracks with more than one: the time from
    their first delivery's arrival to their last (p50/p90/p99, ms), and the share of their
    deliveries that were committed in one transaction with another of the same track."""
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(ARRIVALS, after_id)
    finally:
        await connection.close()
    assert row is not None
    spread = [round(float(x), 2) for x in row["spread_ms"] or []]
    track_deliveries = int(row["track_deliveries"])
    return {
        "deliveries": int(row["deliveries"]),
        "tracks_with_several": int(row["tracks"]),
        "their_deliveries": track_deliveries,
        "first_to_last_ms": dict(zip(("p50", "p90", "p99"), spread, strict=False)),
        "committed_with_own_track": int(row["together"]),
        "committed_with_own_track_share": round(int(row["together"]) / track_deliveries, 4)
        if track_deliveries
        else None,
    }
