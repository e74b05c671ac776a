"""The log is the body as received (issue 10, finding 6): the exact bytes and the signature
header are kept beside the parsed document, `trackhook verify-log` checks every signature
again, and duplicate detection cannot confuse distinct numbers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.client import WebhookClient
from tests.support.payloads import track_webhook

PROJECT_ROOT = Path(__file__).resolve().parents[2]


async def logged(database_url: str) -> list[dict[str, Any]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT id, body, signature, payload FROM webhook_events ORDER BY id")
            )
            return [dict(row._mapping) for row in rows]
    finally:
        await engine.dispose()


async def test_the_exact_bytes_and_the_signature_are_kept(
    client: WebhookClient, database_url: str
) -> None:
    # Spacing, key order and a duplicate key: what a parsed document cannot give back.
    raw = (
        b'{ "data" : {"meetingId":"m","sessionId":"s-raw","participantId":"p","kind":"audio"},'
        b'\n  "note": "first", "note": "second",'
        b' "webhookType":"participant-track-recording-started"}'
    )
    signature = client.signer.sign(raw)
    response = await client.post_raw(raw, signature=signature)
    assert response.status_code == 200, response.text
    (row,) = await logged(database_url)
    assert bytes(row["body"]) == raw
    assert row["signature"] == signature
    payload = row["payload"] if isinstance(row["payload"], dict) else orjson.loads(row["payload"])
    assert payload["note"] == "second"  # the parsed document, as JSON parsers read it


async def test_numbers_that_differ_are_not_duplicates(client: WebhookClient) -> None:
    def body(value: str) -> bytes:
        return (
            b'{"webhookType":"participant-track-recording-started","data":{"meetingId":"m",'
            b'"sessionId":"s-num","participantId":"p","kind":"audio","n":' + value.encode() + b"}}"
        )

    # 30 digits, differing only in the last: parsed as floats they were one number.
    first = (await client.post_raw(body("123456789012345678901234567890"))).json()
    second = (await client.post_raw(body("123456789012345678901234567891"))).json()
    # `1` and `1.0` are the same number: an exact repeat.
    third = (await client.post_raw(body("1"))).json()
    fourth = (await client.post_raw(body("1.0"))).json()
    fifth = (await client.post_raw(body("1e0"))).json()
    assert [a["status"] for a in (first, second, third, fourth, fifth)] == [
        "applied",
        "applied",
        "applied",
        "duplicate",
        "duplicate",
    ]


def trackhook(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "trackhook"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]
    return subprocess.run(
        [*command, *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_verify_log_checks_every_signature_again(
    client: WebhookClient, database_url: str, backend: str
) -> None:
    for n in range(3):
        await client.deliver(track_webhook("started", session_id=f"audit-{n}"))
    await client.deliver({"webhookType": "session-started", "data": {"sessionId": "audit"}})
    env = {
        "DATABASE_URL": database_url,
        "VIDEOSDK_PUBLIC_KEY": client.signer.public_pem,
        "VIDEOSDK_PUBLIC_KEY_FILE": "",
    }
    clean = await asyncio.to_thread(trackhook, "verify-log", env=env)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.splitlines()[:3] == [
        "events read: 4",
        "signature verified: 4",
        "signature does not verify: 0",
    ]

    # One body changed after the fact: its signature no longer covers it.
    rows = await logged(database_url)
    tampered = rows[1]["id"]
    changed = bytes(rows[1]["body"]).replace(b"audit-1", b"audit-X")
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE webhook_events SET body = :body WHERE id = :id"),
                {"body": changed, "id": tampered},
            )
    finally:
        await engine.dispose()
    found = await asyncio.to_thread(trackhook, "verify-log", env=env)
    assert found.returncode == 1, found.stdout + found.stderr
    assert f"signature does not verify: 1 (event ids {tampered})" in found.stdout.splitlines()
