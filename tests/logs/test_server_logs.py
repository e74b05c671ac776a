"""Logs of a real server (issue 11, item 2): uvicorn's lines in the same shape as the app's,
LOG_LEVEL for uvicorn's loggers too, `--log-level` as the server's own, ACCESS_LOG=false,
the request id in the access line, and no Alembic lines per readiness probe."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import migrated_postgres_database
from tests.logs.conftest import (
    GENERATED_ID,
    INTAKE_FIELDS,
    LINE_FIELDS,
    PAYLOAD_ONLY,
    TOKEN,
    intake_lines,
    json_lines,
)
from tests.support.deliveries import server_env
from tests.support.payloads import file_entry, track_webhook
from tests.support.server import ServerProcess
from tests.support.signing import Signer


@pytest.fixture(scope="module")
async def logs_database_url() -> AsyncIterator[str]:
    async with migrated_postgres_database() as url:
        yield url


async def run_server(
    tmp_path: Path,
    database_url: str,
    signer: Signer,
    *,
    log_level: str = "info",
    workers: int = 1,
    **env: str,
) -> ServerProcess:
    server = ServerProcess(
        env=server_env(database_url, signer, **env),
        log_path=tmp_path / f"server-{len(list(tmp_path.iterdir()))}.log",
        log_level=log_level,
        workers=workers,
    )
    await asyncio.to_thread(server.start)
    return server


async def stopped_log(server: ServerProcess) -> str:
    """The server's whole output, once it has stopped (its last lines included)."""
    assert await asyncio.to_thread(server.terminate, 20) is not None
    assert server.log_path is not None
    return server.log_path.read_text()


def signed(
    signer: Signer, payload: dict[str, Any], request_id: str | None = None
) -> dict[str, Any]:
    body = orjson.dumps(payload)
    headers = {"content-type": "application/json", "videosdk-signature": signer.sign(body)}
    if request_id is not None:
        headers["x-request-id"] = request_id
    return {"content": body, "headers": headers}


async def test_json_lines_from_the_server_and_the_app(
    logs_database_url: str, signer: Signer, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    server = await run_server(
        tmp_path,
        logs_database_url,
        signer,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        API_TOKENS=TOKEN,
    )
    servers.append(server)
    stopped = track_webhook("stopped", session_id="srv-logs", files=[file_entry(PAYLOAD_ONLY)])
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        given = await http.post("/webhooks/videosdk", **signed(signer, stopped, "given-id-1"))
        again = await http.post("/webhooks/videosdk", **signed(signer, stopped))
        insane = await http.post(
            "/webhooks/videosdk",
            content=b"{}",
            headers={"videosdk-signature": "Zm9yZ2Vk", "x-request-id": "x" * 200},
        )
        listed = await http.get(
            "/v1/recordings",
            params={"sessionId": "srv-logs"},
            headers={"authorization": f"Bearer {TOKEN}", "x-request-id": "list-1"},
        )
        probes = [
            await http.get("/readyz", headers={"x-request-id": f"probe-{n}"}) for n in range(3)
        ]
    output = await stopped_log(server)
    lines = json_lines(output)

    assert [given.status_code, again.status_code, insane.status_code] == [200, 200, 401]
    assert [listed.status_code, *(probe.status_code for probe in probes)] == [200] * 4
    for line in lines:
        assert set(LINE_FIELDS) <= set(line), line
        assert line["time"].startswith("20"), line
    loggers = {line["logger"] for line in lines}
    assert {"uvicorn.error", "uvicorn.access", "trackhook.intake"} <= loggers, loggers
    messages = [line["message"] for line in lines if line["logger"] == "uvicorn.error"]
    assert any(message.startswith("Started server process") for message in messages), messages
    assert any(message.startswith("Finished server process") for message in messages), messages
    # The id sent, or the one generated, is echoed and on that request's lines.
    assert given.headers["x-request-id"] == "given-id-1"
    generated = again.headers["x-request-id"]
    assert re.fullmatch(GENERATED_ID, generated)
    assert re.fullmatch(GENERATED_ID, insane.headers["x-request-id"])
    by_request: dict[str, list[str]] = {}
    for line in lines:
        if line["request_id"] is not None:
            by_request.setdefault(line["request_id"], []).append(line["logger"])
    # (uvicorn's access line comes as the answer starts, the intake's once it is sent)
    assert by_request["given-id-1"] == ["uvicorn.access", "trackhook.intake"]
    assert by_request[generated] == ["uvicorn.access", "trackhook.intake"]
    assert by_request[insane.headers["x-request-id"]] == ["uvicorn.access", "trackhook.intake"]
    assert by_request["list-1"] == ["uvicorn.access"]
    assert [by_request[f"probe-{n}"] for n in range(3)] == [["uvicorn.access"]] * 3
    # The intake's lines.
    applied, duplicate, forged = intake_lines(lines)
    for line in (applied, duplicate, forged):
        assert set(INTAKE_FIELDS) <= set(line), line
    assert (applied["outcome"], applied["status"]) == ("applied", 200)
    assert applied["event_id"] == given.json()["eventId"]
    assert applied["recording_id"] == given.json()["recordingId"]
    assert applied["session_id"] == "srv-logs"
    assert (duplicate["outcome"], duplicate["event_id"]) == ("duplicate", again.json()["eventId"])
    assert (forged["outcome"], forged["status"]) == ("signature_invalid", 401)
    # The access line has its parts as fields too.
    (access,) = [line for line in lines if line["request_id"] == "list-1"]
    assert (access["method"], access["status"]) == ("GET", 200)
    assert access["path"].startswith("/v1/recordings")
    # Never the payload, the signature, a token or a key; no Alembic line per probe.
    assert PAYLOAD_ONLY not in output
    assert signed(signer, stopped)["headers"]["videosdk-signature"] not in output
    assert TOKEN not in output
    assert "PUBLIC KEY" not in output
    assert [line for line in lines if line["logger"].startswith("alembic")] == []


async def test_access_log_off_with_workers(
    logs_database_url: str, signer: Signer, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    server = await run_server(
        tmp_path,
        logs_database_url,
        signer,
        workers=2,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        ACCESS_LOG="false",
    )
    servers.append(server)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        for n in range(4):
            payload = track_webhook("starting", session_id=f"no-access-{n}")
            assert (await http.post("/webhooks/videosdk", **signed(signer, payload))).is_success
            assert (await http.get("/readyz")).status_code == 200
    lines = json_lines(await stopped_log(server))  # the supervisor's lines are JSON too

    assert [line for line in lines if line["logger"] == "uvicorn.access"] == []
    assert len(intake_lines(lines)) == 4
    messages = [line["message"] for line in lines]
    assert any(message.startswith("Started parent process") for message in messages), messages


@pytest.mark.parametrize(
    ("log_level", "server_level"),
    [("WARNING", "info"), ("INFO", "warning")],
    ids=["LOG_LEVEL=WARNING", "--log-level=warning"],
)
async def test_the_stricter_level_governs_uvicorns_lines(
    logs_database_url: str,
    signer: Signer,
    tmp_path: Path,
    servers: list[ServerProcess],
    log_level: str,
    server_level: str,
) -> None:
    server = await run_server(
        tmp_path,
        logs_database_url,
        signer,
        log_level=server_level,
        LOG_FORMAT="json",
        LOG_LEVEL=log_level,
    )
    servers.append(server)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        payload = track_webhook("starting", session_id=f"levels-{log_level}")
        assert (await http.post("/webhooks/videosdk", **signed(signer, payload))).is_success
    lines = json_lines(await stopped_log(server))

    uvicorn_info = [
        line for line in lines if line["logger"].startswith("uvicorn") and line["level"] == "INFO"
    ]
    assert uvicorn_info == []
    # The app's own lines follow LOG_LEVEL alone: its start-up warning (API_AUTH=off) always,
    # the intake's INFO line only at INFO.
    assert any("API_AUTH=off" in line["message"] for line in lines), lines
    assert len(intake_lines(lines)) == (1 if log_level == "INFO" else 0)


async def test_the_text_format_is_the_default(
    logs_database_url: str, signer: Signer, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    server = await run_server(tmp_path, logs_database_url, signer, LOG_LEVEL="INFO")
    servers.append(server)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        payload = track_webhook("starting", session_id="text-format")
        response = await http.post("/webhooks/videosdk", **signed(signer, payload, "text-1"))
    lines = (await stopped_log(server)).splitlines()

    assert response.status_code == 200
    for line in lines:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
    assert any(line.startswith("INFO uvicorn.error: Started server process") for line in lines)
    (intake,) = [line for line in lines if line.startswith("INFO trackhook.intake: ")]
    assert intake.startswith("INFO trackhook.intake: webhook answered outcome=applied status=200 ")
    assert intake.endswith(" request_id=text-1")
    (access,) = [line for line in lines if line.endswith(" request_id=text-1") and line != intake]
    assert access.startswith("INFO uvicorn.access: ")
    assert '"POST /webhooks/videosdk HTTP/1.1" 200' in access
