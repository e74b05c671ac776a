"""The group writer's statements probe indexes, whatever the statistics.

asyncpg prepares each statement once per connection, and PostgreSQL may keep a generic
plan made when the tables were empty. Written as joins, both statements then kept a hash
join over a sequential scan of `recordings` as it grew: each group read the whole table,
and the bench's intake fell to half (1,412-1,597/s against 2,365/s once fixed, 2 processes,
the same sitting). Planned here as such a connection would: generically, on empty tables."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from app.ledger import group_sql
from tests.support.databases import asyncpg_dsn


def scans(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """(node type, relation) of every node that reads a table."""
    found = []
    if "Relation Name" in plan:
        found.append((plan["Node Type"], plan["Relation Name"]))
    for child in plan.get("Plans", []):
        found.extend(scans(child))
    return found


@pytest.mark.parametrize(
    ("name", "statement", "parameters"),
    [
        ("read_latest", group_sql.READ_LATEST, 3),
        ("write", group_sql.WRITE, 3),
    ],
)
async def test_a_generic_plan_on_empty_tables_reads_recordings_by_index(
    shared_database_url: str, name: str, statement: str, parameters: int
) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(shared_database_url), timeout=10)
    try:
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        await connection.execute(f"PREPARE {name} AS {statement}")
        nulls = ", ".join(["NULL"] * parameters)
        explained = await connection.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE {name}({nulls})")
    finally:
        await connection.close()
    plan = json.loads(explained)[0]["Plan"]
    read = [scan for scan in scans(plan) if scan[1] == "recordings"]
    assert read, f"{name} does not read recordings at all? {plan}"
    assert all(node in {"Index Scan", "Index Only Scan", "ModifyTable"} for node, _ in read), (
        f"{name} reads recordings by {read}"
    )
