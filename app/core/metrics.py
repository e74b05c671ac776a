"""The service's Prometheus metrics: every metric object, declared once here (the intake, the
API, the ledger and the serving layer count into them), and the text `GET /metrics` answers.

One process (`trackhook serve`, plain `uvicorn app.main:app`, the tests' apps): the metrics
live in the process, and the scrape adds prometheus-client's process metrics (CPU, memory,
open files) and Python's. Several worker processes (`trackhook serve --workers N`): each
worker writes its values to memory-mapped files in PROMETHEUS_MULTIPROC_DIR (made fresh per
server by `trackhook serve`, before any worker imports this module: the library chooses its
mode at import), and whichever worker a scrape reaches sums them all. Counters and
histograms are summed, and a dead worker's counts stay in the sum; the gauges say below how
they are combined (`multiprocess_mode`). The library has no process metrics in that mode.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["CONTENT_TYPE_LATEST", "exposition", "is_multiprocess"]

# Seconds, for an answer that takes from about a millisecond (a refused webhook, a cached
# page) to the 5 s bounds of the database's waits.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def is_multiprocess() -> bool:
    """Whether prometheus-client writes to PROMETHEUS_MULTIPROC_DIR (decided at its import)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def exposition() -> bytes:
    """The text format of every metric: this process's, or every worker's summed."""
    if is_multiprocess():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


# Intake (app.intake.lane, one place, after the answer is sent)

WEBHOOKS = Counter(
    "trackhook_webhooks_received",
    "Webhook deliveries answered, by type (a track-recording type, other, or unknown for a "
    "delivery not stored: its outcome says why), outcome (applied, duplicate, ignored, "
    "rejected, or the error code) and HTTP status",
    ("type", "outcome", "status"),
)
INTAKE_SECONDS = Histogram(
    "trackhook_intake_duration_seconds",
    "From a delivery's arrival to its answer sent, by HTTP status",
    ("status",),
    buckets=LATENCY_BUCKETS,
)
SIGNATURE_FAILURES = Counter(
    "trackhook_signature_failures",
    "Deliveries refused for their signature, by reason: missing, multiple, undecodable, "
    "wrong_length, no_key_verifies, key_unavailable",
    ("reason",),
)

# The ledger's writers (app.ledger.group_writer)

GROUP_SIZE = Histogram(
    "trackhook_group_commit_deliveries",
    "Deliveries one group commit wrote (PostgreSQL)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
GROUP_FALLBACKS = Counter(
    "trackhook_group_fallbacks",
    "Deliveries the group writer handed to the locked writer, by reason: not_written (no "
    "group of theirs wrote them: their track changed or was locked elsewhere, or a second "
    "run was opened in the group) or group_failed (a group waited too long on a row lock, "
    "deadlocked, or its statement failed)",
    ("reason",),
)

# The recordings, as the seam announces their commits (app.api.metrics)

TRANSITIONS = Counter(
    "trackhook_recording_transitions",
    "Recordings that moved to a status, by that status: opened with it, or moved forward to "
    "it (counted after the commit; stopped + failed: the recordings finished)",
    ("status",),
)

# HTTP answers

UNAVAILABLE = Counter(
    "trackhook_unavailable_responses",
    "503 answers (intake, API, probes, shutdown), by cause (the error code)",
    ("cause",),
)
API_REQUESTS = Counter(
    "trackhook_api_requests",
    "Requests routed by FastAPI (everything but the intake's POST), by route template "
    "(unmatched for an unknown path), method and HTTP status",
    ("route", "method", "status"),
)
API_SECONDS = Histogram(
    "trackhook_api_request_duration_seconds",
    "From a routed request's arrival to its answer's start, by route template",
    ("route",),
    buckets=LATENCY_BUCKETS,
)

# Per process, summed over the live workers (a dead worker's values are dropped).

POOL_SIZE = Gauge(
    "trackhook_db_pool_size",
    "Connections each pool may hold (writes: DB_POOL_SIZE, reads: DB_READ_POOL_SIZE, "
    "listen: the change watch's one)",
    ("pool",),
    multiprocess_mode="livesum",
)
POOL_IN_USE = Gauge(
    "trackhook_db_pool_in_use",
    "Connections taken from each pool (listen: 1 while the watch is listening)",
    ("pool",),
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    "trackhook_db_pool_waiting",
    "Requests waiting for a connection of each pool (a free one, or a new one opening)",
    ("pool",),
    multiprocess_mode="livesum",
)
FEED_WAITERS = Gauge(
    "trackhook_feed_waiters",
    "Change-feed requests waiting for a change (long-polls and streams)",
    multiprocess_mode="livesum",
)

# The database's state, read at most every METRICS_CACHE_SECONDS per process: every
# process reads the same database, so the most recent reading is the answer.

RECORDINGS_OPEN = Gauge(
    "trackhook_recordings_open",
    "Recordings not finished, by status (starting, started, stopping)",
    ("status",),
    multiprocess_mode="livemostrecent",
)
RECORDINGS_STUCK = Gauge(
    "trackhook_recordings_stuck",
    "Recordings not finished that received nothing for STUCK_AFTER_SECONDS",
    multiprocess_mode="livemostrecent",
)
FEED_LAG = Gauge(
    "trackhook_feed_lag_seconds",
    "Age of the oldest transaction in progress that has written (it holds the change "
    "feed back); 0 when none (PostgreSQL only)",
    multiprocess_mode="livemostrecent",
)
DATABASE_READ_AT = Gauge(
    "trackhook_database_stats_timestamp_seconds",
    "When the gauges read from the database (recordings, stuck, feed lag) were last read",
    multiprocess_mode="max",
)
DATABASE_READ_FAILURES = Counter(
    "trackhook_database_stats_failures",
    "Reads of those gauges that failed (the database unreachable, or a statement past "
    "DB_READ_TIMEOUT_SECONDS); the scrape then shows the last values read",
)
