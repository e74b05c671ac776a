"""Rolling deploys (issue 11, item 5): several `trackhook migrate` started at once on an empty
database all succeed and migrate it once; one waiting for another never holds up that
other's migration (an index built CONCURRENTLY waits for every older snapshot)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import asyncpg

from app.ledger.migrations import MIGRATION_LOCK_KEY, head_revision
from tests.commands.running import PROJECT_ROOT, clean_env, command
from tests.conftest import note_tested, reachable_postgres_admin
from tests.support import databases

AT_ONCE = 3
ROUNDS = 3
SQLITE_ROUNDS = 5  # its race is narrower: 3 rounds of 5 failed before the lock


def migrate_at_once(database_url: str, count: int = AT_ONCE) -> list[tuple[int, str]]:
    """`count` migrations started together; each one's exit status and stderr."""
    env = clean_env(DATABASE_URL=database_url)
    processes = [
        subprocess.Popen(
            command("migrate"),
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    results = []
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        results.append((process.returncode, stderr))
    return results


def failures(results: list[tuple[int, str]]) -> list[str]:
    """What each failed migration said: its exception's line."""
    said = []
    for status, stderr in results:
        if status != 0:
            errors = re.findall(r"^[\w.]+(?:Error|Exception): .*$", stderr, re.MULTILINE)
            said.append(f"exit {status}: {(errors or stderr.strip().splitlines() or [''])[-1]}")
    return said


async def postgres_state(url: str) -> tuple[list[str], list[str]]:
    """alembic_version's rows, and any index left INVALID by an interrupted build."""
    connection = await asyncpg.connect(databases.asyncpg_dsn(url), timeout=10)
    try:
        versions = [
            row[0] for row in await connection.fetch("SELECT version_num FROM alembic_version")
        ]
        invalid = [
            row[0]
            for row in await connection.fetch(
                "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid"
            )
        ]
    finally:
        await connection.close()
    return versions, invalid


async def test_three_migrations_at_once_on_an_empty_postgres_database() -> None:
    admin = await reachable_postgres_admin()
    note_tested("postgresql")
    for round_ in range(ROUNDS):
        url = await databases.create_postgres_database(admin)
        try:
            results = await asyncio.to_thread(migrate_at_once, url)
            assert not failures(results), f"round {round_ + 1}: {failures(results)}"
            assert await postgres_state(url) == ([head_revision()], [])
        finally:
            await databases.drop_postgres_database(admin, url)


def test_three_migrations_at_once_on_a_new_sqlite_file(tmp_path: Path) -> None:
    note_tested("sqlite")
    for round_ in range(SQLITE_ROUNDS):
        database = tmp_path / f"round-{round_}.db"
        results = migrate_at_once(f"sqlite:///{database}")
        assert not failures(results), f"round {round_ + 1}: {failures(results)}"
        with sqlite3.connect(database) as connection:
            versions = [
                row[0] for row in connection.execute("SELECT version_num FROM alembic_version")
            ]
        assert versions == [head_revision()]


async def test_a_waiting_migration_never_holds_up_the_one_running() -> None:
    """The lock holder builds an index CONCURRENTLY while another migration waits for the
    lock: that build waits for every transaction with an older snapshot, so a waiter
    blocked inside `pg_advisory_lock` (a statement, with a snapshot) and the holder would
    wait for each other until PostgreSQL's deadlock detector failed one of them."""
    admin = await reachable_postgres_admin()
    note_tested("postgresql")
    url = await databases.create_postgres_database(admin)
    holder = await asyncpg.connect(databases.asyncpg_dsn(url), timeout=10)
    waiting: subprocess.Popen[str] | None = None
    try:
        await holder.execute("CREATE TABLE scratch (n int)")
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_KEY)
        waiting = subprocess.Popen(
            command("migrate"),
            cwd=PROJECT_ROOT,
            env=clean_env(DATABASE_URL=url),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Until the migration has connected and asked for the lock at least once.
        deadline = time.monotonic() + 30
        while not await holder.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'trackhook-maintenance'"
            " AND datname = current_database()"
        ):
            assert waiting.poll() is None, waiting.communicate()[1]
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await asyncio.wait_for(
            holder.execute("CREATE INDEX CONCURRENTLY ix_scratch ON scratch (n)"), timeout=20
        )
        built_in = time.monotonic() - started
        assert waiting.poll() is None, "the migration did not wait for the lock"
        assert await holder.fetchval("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        _, stderr = await asyncio.to_thread(waiting.communicate, timeout=60)
        assert waiting.returncode == 0, stderr
        assert built_in < 5, f"the index took {built_in:.1f} s while a migration waited"
        assert await postgres_state(url) == ([head_revision()], [])
    finally:
        if waiting is not None and waiting.poll() is None:
            waiting.kill()
            waiting.wait()
        await holder.close()
        await databases.drop_postgres_database(admin, url)


def test_a_schema_a_later_release_migrated_is_left_as_it_is(tmp_path: Path) -> None:
    """A rollback runs the previous release's `trackhook migrate` (its Job, its compose
    service) on the schema the later release migrated: nothing to do, and it says so."""
    note_tested("sqlite")
    database = tmp_path / "trackhook.db"
    assert migrate_at_once(f"sqlite:///{database}", 1)[0][0] == 0
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999_next'")
    ((status, stderr),) = migrate_at_once(f"sqlite:///{database}", 1)
    assert status == 0, stderr
    assert "left" in stderr and "at 9999_next" in stderr
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("9999_next",)
        ]
