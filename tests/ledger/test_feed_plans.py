"""A feed page is one statement on PostgreSQL, and it reads `recordings` by index.

The page, its horizon and (for a filtered read) its scan frontier are one statement, one
round trip (they were two). Planned generically, on empty tables: the least a plan can know
(the read pool plans for the values given, see test_read_plans.py; this is the floor).
The unfiltered page, what every follower at the head of the feed asks for, is an index
range scan in feed order from the position; no shape reads the whole table."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from app.ledger import feed
from tests.ledger.test_group_plans import scans
from tests.support.databases import asyncpg_dsn

SHAPES = [
    ((), 0, False),
    (("kind",), 0, True),
    ((), 2, True),
    (("meeting_id",), 1, True),
    (("participant_id", "session_id"), 0, True),
]


async def plan_of(url: str, equal: tuple[str, ...], statuses: int, scan: bool) -> dict[str, Any]:
    sql, names, _constants = feed.one_statement_page_query(equal, statuses, scan).postgresql
    connection = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        await connection.execute(f"PREPARE page AS {sql}")
        nulls = ", ".join(["NULL"] * len(names))
        explained = await connection.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE page({nulls})")
    finally:
        await connection.close()
    plan: dict[str, Any] = json.loads(explained)[0]["Plan"]
    return plan


def index_scans(plan: dict[str, Any]) -> list[str]:
    found = [plan["Index Name"]] if plan["Node Type"] in {"Index Scan", "Index Only Scan"} else []
    for child in plan.get("Plans", []):
        found.extend(index_scans(child))
    return found


@pytest.mark.parametrize(("equal", "statuses", "scan"), SHAPES)
async def test_no_page_reads_the_whole_table(
    shared_database_url: str, equal: tuple[str, ...], statuses: int, scan: bool
) -> None:
    plan = await plan_of(shared_database_url, equal, statuses, scan)
    read = [node for node, relation in scans(plan) if relation == "recordings"]
    assert read, f"the page does not read recordings at all? {plan}"
    assert "Seq Scan" not in read, f"the page reads recordings by {read}"


async def test_the_unfiltered_page_is_an_index_range_in_feed_order(
    shared_database_url: str,
) -> None:
    plan = await plan_of(shared_database_url, (), 0, False)
    read = [node for node, relation in scans(plan) if relation == "recordings"]
    assert read == ["Index Scan"], f"the page reads recordings by {read}"
    assert index_scans(plan) == ["ix_recordings_change"]
