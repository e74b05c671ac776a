"""The benchmark's PostgreSQL database: create, migrate, inspect, sample, drop."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from app.ledger.migrations import upgrade_to_head

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432"
# What decides whether a 2xx is durable, and what shapes the figures.
SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_sync_method",
    "wal_level",
    "shared_buffers",
    "max_connections",
    "work_mem",
    "effective_io_concurrency",
)


def plain_dsn(url: str) -> str:
    """The URL asyncpg accepts: no SQLAlchemy driver suffix."""
    for prefix in ("postgresql+asyncpg://", "postgres+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def service_url(url: str) -> str:
    """The URL the service gets (SQLAlchemy, asyncpg driver)."""
    return "postgresql+asyncpg://" + plain_dsn(url).removeprefix("postgresql://")


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


@dataclass
class BenchDatabase:
    dsn: str  # asyncpg form
    created: bool  # True when the bench made it and must drop it

    @property
    def name(self) -> str:
        return urlsplit(self.dsn).path.lstrip("/")

    @classmethod
    async def create(cls, server: str = DEFAULT_SERVER) -> BenchDatabase:
        name = f"trackhook_bench_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(f"{server}/postgres")
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        return cls(f"{server}/{name}", created=True)

    def migrate(self) -> None:
        upgrade_to_head(service_url(self.dsn))

    async def drop(self) -> None:
        if not self.created:
            return
        parts = urlsplit(self.dsn)
        admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await admin.close()

    async def facts(self) -> dict[str, str]:
        connection = await asyncpg.connect(self.dsn)
        try:
            return {name: await connection.fetchval(f"SHOW {name}") for name in SETTINGS}
        finally:
            await connection.close()

    async def counts(self) -> dict[str, int]:
        connection = await asyncpg.connect(self.dsn)
        try:
            return {
                table: int(await connection.fetchval(f"SELECT count(*) FROM {table}"))
                for table in ("recordings", "webhook_events")
            }
        finally:
            await connection.close()

    async def checkpoint(self) -> None:
        """Start a comparison run right after a checkpoint: the first change to each page
        after one writes the whole page to the WAL, so runs that start at different
        distances from a checkpoint are not comparable."""
        connection = await asyncpg.connect(self.dsn)
        try:
            await connection.execute("CHECKPOINT")
        finally:
            await connection.close()

    async def warm_read_path(self) -> dict[str, Any]:
        """Read what the query API reads into the OS page cache: the recordings table and
        its indexes, and the timeline index (a recording's events are read from it alone).
        The log's heap (most of the data) is left cold. A server in service has its
        working set cached; right after a bulk load, reads would measure the disk."""
        connection = await asyncpg.connect(self.dsn)
        try:
            try:
                await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            except asyncpg.PostgresError as exc:
                return {"warmed": False, "why": f"pg_prewarm unavailable: {exc}"}
            started = time.monotonic()
            relations: list[str] = [
                row["name"]
                for row in await connection.fetch(
                    "SELECT c.oid::regclass::text AS name FROM pg_class c "
                    "WHERE c.oid = 'recordings'::regclass OR c.oid IN ("
                    "  SELECT indexrelid FROM pg_index WHERE indrelid = 'recordings'::regclass)"
                    " OR c.relname = 'ix_webhook_events_recording_timeline'"
                )
            ]
            pages = 0
            for name in relations:
                pages += int(await connection.fetchval("SELECT pg_prewarm($1, 'read')", name))
        finally:
            await connection.close()
        return {
            "warmed": True,
            "relations": relations,
            "megabytes": round(pages * 8192 / 2**20),
            "seconds": round(time.monotonic() - started, 1),
        }

    async def sample(self, size: int) -> tuple[list[int], list[str]]:
        """Random recording ids and session ids to query, drawn from what is there."""
        connection = await asyncpg.connect(self.dsn)
        try:
            total = int(await connection.fetchval("SELECT count(*) FROM recordings"))
            if total == 0:
                return [], []
            # BERNOULLI reads every page but skips the sort of ORDER BY random() on 1M rows.
            share = min(100.0, 100.0 * size * 3 / total)
            rows: list[Any] = await connection.fetch(
                f"SELECT id, session_id FROM recordings TABLESAMPLE BERNOULLI ({share}) "
                f"ORDER BY random() LIMIT {size}"
            )
        finally:
            await connection.close()
        ids = [int(row["id"]) for row in rows]
        sessions = list(dict.fromkeys(str(row["session_id"]) for row in rows))
        return ids, sessions

    async def versions(self, ids: Iterable[int]) -> dict[int, int]:
        """The current `version` of these recordings."""
        connection = await asyncpg.connect(self.dsn)
        try:
            rows = await connection.fetch(
                "SELECT id, version FROM recordings WHERE id = ANY($1::bigint[])", list(ids)
            )
        finally:
            await connection.close()
        return {int(row["id"]): int(row["version"]) for row in rows}

    async def feed_share_before(self, recording_id: int) -> float | None:
        """The share of all recordings that come before this one in the change feed's
        order, (change_txn, id): where a cursor just before it stands."""
        connection = await asyncpg.connect(self.dsn)
        try:
            share = await connection.fetchval(
                "SELECT (SELECT count(*) FROM recordings r "
                "        WHERE (r.change_txn, r.id) < (x.change_txn, x.id))::float8"
                "       / (SELECT count(*) FROM recordings) "
                "FROM recordings x WHERE x.id = $1",
                recording_id,
            )
        finally:
            await connection.close()
        return None if share is None else round(float(share), 4)


def durability_problems(facts: dict[str, str]) -> list[str]:
    problems = []
    if facts.get("fsync") != "on":
        problems.append(f"fsync = {facts.get('fsync')}")
    if facts.get("synchronous_commit") not in ("on", "remote_write", "remote_apply"):
        problems.append(f"synchronous_commit = {facts.get('synchronous_commit')}")
    return problems
