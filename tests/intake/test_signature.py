"""Signature checks at the intake: what is accepted, what is a 401, where the key comes from."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from tests.conftest import ClientFactory
from tests.support.client import WebhookClient
from tests.support.payloads import file_entry, track_webhook
from tests.support.signing import Signer


@pytest.fixture(scope="module")
def other_signer() -> Signer:
    return Signer.generate()


async def assert_nothing_stored(client: WebhookClient) -> None:
    events = await client.get("/v1/webhook-events")
    recordings = await client.get("/v1/recordings")
    assert events.status_code == recordings.status_code == 200
    assert events.json()["items"] == []
    assert recordings.json()["items"] == []


async def assert_applied(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert answer["status"] == "applied"
    return answer


async def test_signature_over_the_raw_body(client: WebhookClient) -> None:
    body = orjson.dumps(track_webhook("starting"))

    await assert_applied(await client.post_raw(body))


async def test_signature_over_the_compact_reserialisation(client: WebhookClient) -> None:
    payload = track_webhook("stopped", files=[{**file_entry("a"), "title": "Zoë's talk ✓ 会议"}])
    payload["data"]["participantName"] = "Łukasz Ünal 🎙"
    body = json.dumps(payload, indent=2, ensure_ascii=False).encode()
    compact = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    assert body != compact

    answer = await assert_applied(
        await client.post_raw(body, signature=client.signer.sign(compact))
    )

    recording = (await client.get(f"/v1/recordings/{answer['recordingId']}")).json()
    assert recording["files"][0]["title"] == "Zoë's talk ✓ 会议"


async def test_missing_signature_is_401(client: WebhookClient) -> None:
    response = await client.post_raw(orjson.dumps(track_webhook("starting")), signature=None)

    assert response.status_code == 401, response.text
    assert response.json()["error"] == "signature_missing"
    await assert_nothing_stored(client)


async def test_signature_by_another_key_is_401(client: WebhookClient, other_signer: Signer) -> None:
    body = orjson.dumps(track_webhook("stopped"))

    response = await client.post_raw(body, signature=other_signer.sign(body))

    assert response.status_code == 401, response.text
    assert response.json()["error"] == "signature_invalid"
    await assert_nothing_stored(client)


TAMPERINGS: dict[str, Callable[[bytes], bytes]] = {
    "changed-id": lambda body: body.replace(b'"abcd"', b'"abce"'),
    "changed-file-url": lambda body: body.replace(b"https://cdn.", b"https://evil."),
    "changed-kind": lambda body: body.replace(b"audio", b"video"),
    "added-field": lambda body: body[:-1] + b',"extra":1}',
}


# (Whitespace-only changes are not tampering: the compact form of the document still verifies.)
async def test_tampered_body_is_401(client: WebhookClient) -> None:
    body = orjson.dumps(track_webhook("stopped"))
    signature = client.signer.sign(body)
    for name, tamper in TAMPERINGS.items():
        tampered = tamper(body)
        assert tampered != body, name

        response = await client.post_raw(tampered, signature=signature)

        assert response.status_code == 401, (name, response.text)
        assert response.json()["error"] == "signature_invalid", name
    await assert_nothing_stored(client)


MALFORMED_SIGNATURES = {
    "empty": "",
    "blank": "   ",
    "not-base64": "not base64 at all!",
    "wrong-length": base64.b64encode(b"short").decode(),
    "too-long": "A" * 1000,
}


async def test_malformed_signature_is_401(client: WebhookClient) -> None:
    body = orjson.dumps(track_webhook("starting"))
    for name, header in MALFORMED_SIGNATURES.items():
        response = await client.post_raw(body, signature=header)

        assert response.status_code == 401, (name, response.text)
        assert response.json()["error"] == "signature_invalid", name
    await assert_nothing_stored(client)


async def test_two_signature_headers_are_401(client: WebhookClient) -> None:
    body = orjson.dumps(track_webhook("starting"))
    good = client.signer.sign(body)
    headers = [
        ("content-type", "application/json"),
        ("videosdk-signature", good),
        ("videosdk-signature", good),
    ]

    response = await client.http.post("/webhooks/videosdk", content=body, headers=headers)

    assert response.status_code == 401, response.text
    await assert_nothing_stored(client)


async def test_signature_is_checked_before_anything_else(client: WebhookClient) -> None:
    bodies = [b"{not json", b"[]", b"", orjson.dumps({"webhookType": "session-started"})]
    for body in bodies:
        unsigned = await client.post_raw(body, signature=None)
        forged = await client.post_raw(body, signature=client.signer.sign(body + b"x"))

        assert unsigned.status_code == 401, (body, unsigned.text)
        assert forged.status_code == 401, (body, forged.text)
    await assert_nothing_stored(client)


async def test_pkcs1_rsa_public_key_pem(make_client: ClientFactory, signer: Signer) -> None:
    assert "BEGIN RSA PUBLIC KEY" in signer.public_pem_pkcs1
    client = await make_client(videosdk_public_key=SecretStr(signer.public_pem_pkcs1))

    await assert_applied(await client.post(track_webhook("starting")))
    body = orjson.dumps(track_webhook("started"))
    response = await client.post_raw(body, signature=client.signer.sign(body + b" "))
    assert response.status_code == 401


@pytest.mark.parametrize("form", ["spki", "pkcs1"])
async def test_public_key_file(
    make_client: ClientFactory, signer: Signer, tmp_path: Path, form: str
) -> None:
    key_file = tmp_path / "videosdk.pem"
    key_file.write_text(signer.public_pem if form == "spki" else signer.public_pem_pkcs1)
    client = await make_client(videosdk_public_key=None, videosdk_public_key_file=key_file)

    await assert_applied(await client.post(track_webhook("starting")))
    response = await client.post_raw(orjson.dumps(track_webhook("started")), signature=None)
    assert response.status_code == 401


class KeyServer:
    """A real HTTP server on 127.0.0.1 that serves one body and counts requests."""

    def __init__(self, body: bytes, content_type: str, status: int = 200) -> None:
        self.requests = 0
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                served.requests += 1
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v2/public/rsa-public-key"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> KeyServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _key_response(form: str, signer: Signer) -> tuple[bytes, str]:
    if form == "pem":
        return signer.public_pem.encode(), "application/x-pem-file"
    if form == "pem-pkcs1":
        return signer.public_pem_pkcs1.encode(), "text/plain"
    return orjson.dumps({"publicKey": signer.public_pem}), "application/json"


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The key server is local; a proxy from the environment must not sit in between.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield


async def test_key_fetched_once_from_the_url_and_cached(
    make_client: ClientFactory, signer: Signer, no_proxy: None
) -> None:
    for round_number, form in enumerate(("pem", "pem-pkcs1", "json")):
        body, content_type = _key_response(form, signer)
        with KeyServer(body, content_type) as server:
            # A new app instance: a new provider, so a new fetch.
            client = await make_client(videosdk_public_key=None, videosdk_public_key_url=server.url)
            sessions = [f"s-{round_number}-{i}" for i in range(5)]
            first_wave = [client.post(track_webhook("starting", session_id=s)) for s in sessions]
            for response in await asyncio.gather(*first_wave):
                await assert_applied(response)
            for status in ("started", "stopping", "stopped"):
                payload = track_webhook(status, session_id=sessions[0])
                await assert_applied(await client.post(payload))
            forged = orjson.dumps(track_webhook("failed", session_id=sessions[1]))
            refused = await client.post_raw(forged, signature=client.signer.sign(forged + b"x"))

            assert refused.status_code == 401, form
            assert server.requests == 1, form


def _closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/rsa-public-key"


async def test_key_url_unreachable_is_503_with_retry_after(
    make_client: ClientFactory, no_proxy: None
) -> None:
    client = await make_client(
        videosdk_public_key=None, videosdk_public_key_url=_closed_port_url(), retry_after_seconds=7
    )

    for _ in range(2):
        response = await client.post(track_webhook("starting"))
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "7"
        assert response.json()["error"] == "public_key_unavailable"
    await assert_nothing_stored(client)


UNUSABLE_KEY_ANSWERS = {
    "http-500": (b"internal error", "text/plain", 500),
    "http-404": (b"{}", "application/json", 404),
    "json-without-pem": (b'{"publicKey": null}', "application/json", 200),
    "html": (b"<html>maintenance</html>", "text/html", 200),
    "broken-pem": (
        b"-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n",
        "text/plain",
        200,
    ),
}


async def test_key_url_answering_no_usable_key_is_503(
    make_client: ClientFactory, no_proxy: None
) -> None:
    for name, (body, content_type, status) in UNUSABLE_KEY_ANSWERS.items():
        with KeyServer(body, content_type, status) as server:
            client = await make_client(videosdk_public_key=None, videosdk_public_key_url=server.url)

            response = await client.post(track_webhook("starting"))

            assert response.status_code == 503, (name, response.text)
            assert "retry-after" in response.headers, name
            assert server.requests == 1, name
        await assert_nothing_stored(client)


async def test_signature_off_accepts_unsigned(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        client = await make_client(webhook_signature="off", videosdk_public_key=None)
    assert any("WEBHOOK_SIGNATURE=off" in record.getMessage() for record in caplog.records)

    answer = await assert_applied(
        await client.post_raw(orjson.dumps(track_webhook("starting")), signature=None)
    )

    [logged] = (await client.get("/v1/webhook-events")).json()["items"]
    assert logged["id"] == answer["eventId"]
