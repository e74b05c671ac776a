"""PostgreSQL group commit: one locked recording must not hold up other tracks' webhooks,
and the locked track's webhook is still applied once the lock goes."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.support.client import WebhookClient
from tests.support.databases import asyncpg_dsn
from tests.support.payloads import track_webhook

# Far longer than the group's lock timeout (200 ms), far shorter than a hang.
UNBLOCKED_WITHIN_SECONDS = 10


# Group commit is PostgreSQL's; SQLite serialises every writer anyway.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_locked_track_does_not_hold_up_the_others(
    client: WebhookClient, database_url: str
) -> None:
    locked = await client.deliver(track_webhook("starting", session_id="locked-session"))
    holder = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute(
            "SELECT id FROM recordings WHERE id = $1 FOR UPDATE", int(locked["recordingId"])
        )
        waiting = asyncio.create_task(
            client.post(track_webhook("started", session_id="locked-session"))
        )
        others = [
            asyncio.create_task(client.post(track_webhook("started", session_id=f"free-{n}")))
            for n in range(5)
        ]
        done, _ = await asyncio.wait(others, timeout=UNBLOCKED_WITHIN_SECONDS)
        assert len(done) == len(others), "other tracks waited on the locked one"
        assert all(task.result().status_code == 200 for task in others)
        assert not waiting.done(), "the locked track's webhook was answered under the lock"
        await transaction.rollback()
    finally:
        await holder.close()
    answer = await asyncio.wait_for(waiting, UNBLOCKED_WITHIN_SECONDS)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "applied"
    detail = (await client.get(f"/v1/recordings/{locked['recordingId']}")).json()
    assert detail["status"] == "started"
