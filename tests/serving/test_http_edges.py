"""The edges of HTTP as the server process answers them: malformed requests get the
service's JSON error shape, nothing is redirected, the probes answer HEAD, an error never
echoes a long value back, and every answer carries the same security headers."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.serving.rawhttp import exchange, parse_answer
from tests.support.payloads import track_webhook
from tests.support.server import ServerProcess
from tests.support.signing import Signer

WEBHOOK_HEAD = b"POST /webhooks/videosdk HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"

MALFORMED = [
    pytest.param(
        WEBHOOK_HEAD + b"Content-Length: abc\r\n\r\n{}", "bad_content_length", id="cl-text"
    ),
    pytest.param(WEBHOOK_HEAD + b"Content-Length: -2\r\n\r\n{}", "bad_content_length", id="cl-neg"),
    pytest.param(
        WEBHOOK_HEAD + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        "bad_content_length",
        id="cl-twice",
    ),
    pytest.param(
        WEBHOOK_HEAD + b"Content-Length: 99999999999999999999999\r\n\r\n{}",
        "bad_content_length",
        id="cl-overflow",
    ),
    pytest.param(
        WEBHOOK_HEAD + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        "bad_content_length",
        id="cl-and-chunked",
    ),
    pytest.param(b"G@T / HTTP/1.1\r\nHost: t\r\n\r\n", "bad_request", id="method"),
    pytest.param(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", "bad_request", id="header-name"),
    pytest.param(b"GET / HTTP/7.0\r\nHost: t\r\n\r\n", "bad_request", id="version"),
    pytest.param(
        b"POST /webhooks/videosdk HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "bad_request",
        id="chunk-size",
    ),
]


def assert_security_headers(headers: httpx.Headers | dict[str, str], what: str) -> None:
    assert headers.get("x-content-type-options") == "nosniff", f"{what}: {dict(headers)}"
    assert "server" not in headers, f"{what}: {dict(headers)}"


@pytest.mark.parametrize(("request_bytes", "error"), MALFORMED)
async def test_a_malformed_request_gets_the_json_error_shape(
    server: ServerProcess, request_bytes: bytes, error: str
) -> None:
    raw = await exchange(server.port, request_bytes)
    answer = parse_answer(raw)
    assert answer.status == 400, raw
    assert answer.header("content-type") == "application/json", raw
    body = answer.json()
    assert isinstance(body, dict) and body["error"] == error, raw
    assert isinstance(body["detail"], str) and body["detail"], raw
    assert answer.header("connection") == "close", raw
    assert_security_headers(dict(answer.headers), f"400 {error}")


async def test_a_huge_head_is_refused_not_read_and_echoed(server: ServerProcess) -> None:
    huge = WEBHOOK_HEAD.replace(b"application/json", b"text/" + b"a" * 200_000)
    raw = await exchange(server.port, huge + b"Content-Length: 2\r\n\r\n{}")
    answer = parse_answer(raw)
    assert answer.status == 431, raw[:300]
    body = answer.json()
    assert isinstance(body, dict) and body["error"] == "headers_too_large", raw[:300]
    assert len(raw) < 1000
    assert_security_headers(dict(answer.headers), "431")


async def test_the_webhook_path_with_a_trailing_slash_is_answered_not_redirected(
    server: ServerProcess, signer: Signer
) -> None:
    body = orjson.dumps(track_webhook("starting", session_id="trailing-slash"))
    headers = {"content-type": "application/json", "videosdk-signature": signer.sign(body)}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        answer = await client.post("/webhooks/videosdk/", content=body, headers=headers)
        assert answer.status_code == 200, (answer.status_code, answer.headers, answer.text)
        assert answer.json()["status"] == "applied"
        # Nothing else is redirected either: a path is served or it is a 404.
        for path in ("/v1/recordings/", "/healthz/", "/v1/webhook-events/"):
            other = await client.get(path)
            assert other.status_code == 404, (path, other.status_code, other.headers)
            assert other.json()["error"] == "not_found"


async def test_the_probes_answer_head(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        for path in ("/healthz", "/readyz"):
            answer = await client.head(path)
            assert answer.status_code == 200, (path, answer.status_code, answer.text)
            assert answer.content == b""
            assert answer.headers["content-type"] == "application/json"


async def test_a_404_does_not_echo_a_long_id_back(server: ServerProcess) -> None:
    long_id = "9" * 10_000
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        answer = await client.get(f"/v1/recordings/{long_id}")
    assert answer.status_code == 404
    body = answer.json()
    assert body["error"] == "recording_not_found"
    assert len(answer.content) < 300, f"{len(answer.content)} bytes: {answer.text[:200]}..."
    assert body["detail"].startswith("no recording with id '9999")
    assert "10000 characters" in body["detail"]


async def test_every_answer_says_nosniff_and_names_no_server(
    server: ServerProcess, signer: Signer
) -> None:
    body = orjson.dumps(track_webhook("started", session_id="headers"))
    signed = {"content-type": "application/json", "videosdk-signature": signer.sign(body)}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        answers = {
            "intake 200": await client.post("/webhooks/videosdk", content=body, headers=signed),
            "intake 401": await client.post(
                "/webhooks/videosdk", content=body, headers={"content-type": "application/json"}
            ),
            "intake 415": await client.post(
                "/webhooks/videosdk", content=body, headers={"content-type": "text/plain"}
            ),
            "api 200": await client.get("/v1/recordings"),
            "api 422": await client.get("/v1/recordings", params={"limit": 0}),
            "404": await client.get("/nowhere"),
            "405": await client.get("/webhooks/videosdk"),
            "healthz": await client.get("/healthz"),
            "docs": await client.get("/openapi.json"),
        }
    for what, answer in answers.items():
        assert_security_headers(answer.headers, f"{what} ({answer.status_code})")
    assert answers["intake 200"].status_code == 200, answers["intake 200"].text
