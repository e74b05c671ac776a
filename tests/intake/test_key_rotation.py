"""Key rotation (issue 11, item 6): several PEM keys in `VIDEOSDK_PUBLIC_KEY` or its file
(any one verifies), and a fetched key that is refreshed on a signature failure (at most once
a minute) and on a TTL, against a real HTTP key server on 127.0.0.1.

Time is the provider's clock, moved by the tests (`Clock`); the key server, the app and the
databases are real.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from app.core.config import Settings
from app.intake import public_key
from app.intake.signature import PublicKeyError, SignatureError, load_public_keys
from tests.conftest import ClientFactory
from tests.support.client import WebhookClient
from tests.support.payloads import track_webhook
from tests.support.signing import Signer

PROVIDER_LOGGER = "app.intake.public_key"


@pytest.fixture(scope="module")
def keys() -> dict[str, Signer]:
    """Three 2048-bit signers and a 3072-bit one (a signature of another length)."""
    made = {name: Signer.generate() for name in ("a", "b", "c")}
    made["big"] = Signer(rsa.generate_private_key(public_exponent=65537, key_size=3072))
    return made


class Clock:
    """The provider's monotonic clock, moved forward by the test."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(public_key, "monotonic", fake)
    return fake


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # The key server is local; a proxy from the environment must not sit in between.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


def key_document(*signers: Signer) -> bytes:
    """What VideoSDK's key endpoint answers: exactly `{"publicKey": "<PEM>"}`."""
    return orjson.dumps({"publicKey": "".join(signer.public_pem for signer in signers)})


class KeyServer:
    """A real HTTP server on a free port of 127.0.0.1 that answers what the test sets
    (`serve`, `fail`) and counts the requests it got."""

    def __init__(self, body: bytes) -> None:
        self.requests = 0
        self.status = 200
        self.body = body
        self._count = threading.Lock()
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                with served._count:
                    served.requests += 1
                status, body = served.status, served.body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
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
        self._thread.start()

    def serve(self, *signers: Signer) -> None:
        self.status, self.body = 200, key_document(*signers)

    def fail(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def key_server(no_proxy: None, keys: dict[str, Signer]) -> Iterator[KeyServer]:
    server = KeyServer(key_document(keys["a"]))
    yield server
    server.close()


async def post_signed(client: WebhookClient, signer: Signer, **ids: Any) -> httpx.Response:
    body = orjson.dumps(track_webhook("starting", **ids))
    return await client.post_raw(body, signature=signer.sign(body))


async def assert_accepted(client: WebhookClient, signer: Signer, session: str) -> None:
    response = await post_signed(client, signer, session_id=session)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "applied"


async def assert_refused(client: WebhookClient, signer: Signer, session: str) -> None:
    response = await post_signed(client, signer, session_id=session)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "signature_invalid"


async def url_client(
    make_client: ClientFactory, server: KeyServer, **overrides: Any
) -> WebhookClient:
    return await make_client(
        videosdk_public_key=None, videosdk_public_key_url=server.url, **overrides
    )


def provider_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == PROVIDER_LOGGER and record.levelno >= logging.WARNING
    ]


# -- Several keys in VIDEOSDK_PUBLIC_KEY and in VIDEOSDK_PUBLIC_KEY_FILE -----------------


def several_pems(keys: dict[str, Signer]) -> str:
    """a (SPKI), b (PKCS#1) and big (SPKI, 3072 bits), with text around the blocks."""
    return (
        "# VideoSDK, current\n"
        + keys["a"].public_pem
        + "\n# next (PKCS#1)\n"
        + keys["b"].public_pem_pkcs1
        + keys["big"].public_pem
        + "\n"
    )


async def test_several_keys_in_the_env_var_each_verifies(
    make_client: ClientFactory, keys: dict[str, Signer]
) -> None:
    client = await make_client(videosdk_public_key=SecretStr(several_pems(keys)))

    for name in ("a", "b", "big"):
        await assert_accepted(client, keys[name], f"env-{name}")
    await assert_refused(client, keys["c"], "env-c")


async def test_several_keys_in_a_one_line_env_var(
    make_client: ClientFactory, keys: dict[str, Signer]
) -> None:
    one_line = (keys["a"].public_pem + keys["b"].public_pem).replace("\n", "\\n")
    client = await make_client(videosdk_public_key=SecretStr(one_line))

    await assert_accepted(client, keys["a"], "line-a")
    await assert_accepted(client, keys["b"], "line-b")
    await assert_refused(client, keys["c"], "line-c")


async def test_several_keys_in_the_file_each_verifies(
    make_client: ClientFactory, keys: dict[str, Signer], tmp_path: Path
) -> None:
    key_file = tmp_path / "videosdk.pem"
    key_file.write_text(several_pems(keys))
    client = await make_client(videosdk_public_key=None, videosdk_public_key_file=key_file)

    for name in ("a", "b", "big"):
        await assert_accepted(client, keys[name], f"file-{name}")
    await assert_refused(client, keys["c"], "file-c")


async def test_a_signature_of_another_length_is_401(
    make_client: ClientFactory, keys: dict[str, Signer]
) -> None:
    client = await make_client(videosdk_public_key=SecretStr(keys["a"].public_pem))
    body = orjson.dumps(track_webhook("starting"))

    response = await client.post_raw(body, signature=keys["big"].sign(body))

    assert response.status_code == 401, response.text
    assert "384 bytes" in response.json()["detail"]


def test_loading_several_keys(keys: dict[str, Signer]) -> None:
    loaded = load_public_keys(several_pems(keys))
    assert len(loaded) == 3
    twice = load_public_keys(keys["a"].public_pem + keys["a"].public_pem_pkcs1)
    assert len(twice) == 1  # the same key in either form is one key


UNUSABLE_PEMS = {
    "empty": "",
    "no-block": "not a key",
    "private-key": "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
    "certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    "broken-block": "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n",
}


@pytest.mark.parametrize("name", UNUSABLE_PEMS)
def test_unusable_key_text_is_refused(name: str) -> None:
    with pytest.raises(PublicKeyError):
        load_public_keys(UNUSABLE_PEMS[name])


def test_a_truncated_block_among_good_ones_is_refused(keys: dict[str, Signer]) -> None:
    truncated = keys["b"].public_pem.split("-----END")[0]
    with pytest.raises(PublicKeyError, match="unterminated"):
        load_public_keys(keys["a"].public_pem + truncated)


# -- The key file is re-read when it changes (optional in the issue; chosen) -------------


def replace_file(path: Path, text: str) -> None:
    """As a Kubernetes secret volume or `mv` changes it: a new file renamed over the old."""
    staged = path.with_suffix(".new")
    staged.write_text(text)
    os.replace(staged, path)


async def test_key_file_rotation_needs_no_restart(
    make_client: ClientFactory,
    keys: dict[str, Signer],
    tmp_path: Path,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key_file = tmp_path / "videosdk.pem"
    key_file.write_text(keys["a"].public_pem)
    client = await make_client(videosdk_public_key=None, videosdk_public_key_file=key_file)
    await assert_accepted(client, keys["a"], "f-1")

    # A new key is added: the first delivery it signs makes the file be read again.
    replace_file(key_file, keys["a"].public_pem + keys["b"].public_pem)
    await assert_accepted(client, keys["b"], "f-2")
    await assert_accepted(client, keys["a"], "f-3")

    # The old key is removed: it stops verifying once the file is looked at again (1 s).
    replace_file(key_file, keys["b"].public_pem)
    clock.advance(1.1)
    await assert_refused(client, keys["a"], "f-4")
    await assert_accepted(client, keys["b"], "f-5")

    # A broken or missing file keeps the keys read before, and is logged once.
    with caplog.at_level(logging.WARNING, logger=PROVIDER_LOGGER):
        replace_file(key_file, "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n")
        for step in range(3):
            clock.advance(1.1)
            await assert_accepted(client, keys["b"], f"f-broken-{step}")
            await assert_refused(client, keys["c"], f"f-broken-c-{step}")
        key_file.unlink()
        clock.advance(1.1)
        await assert_accepted(client, keys["b"], "f-missing")
    assert len(provider_warnings(caplog)) == 2, provider_warnings(caplog)  # broken, missing

    replace_file(key_file, keys["c"].public_pem)
    await assert_accepted(client, keys["c"], "f-6")


# -- A fetched key: VideoSDK's endpoint, rotation, the refresh limit, the TTL -------------


async def test_the_key_endpoint_answer_is_exactly_public_key_json(
    make_client: ClientFactory, keys: dict[str, Signer], key_server: KeyServer, clock: Clock
) -> None:
    # The shape of @videosdk.live/server-sdk's key endpoint (issue 10, item 11).
    assert orjson.loads(key_server.body) == {"publicKey": keys["a"].public_pem}
    client = await url_client(make_client, key_server)

    await assert_accepted(client, keys["a"], "shape")
    assert key_server.requests == 1


async def test_rotation_at_the_key_server_is_picked_up_by_the_first_delivery(
    make_client: ClientFactory, keys: dict[str, Signer], key_server: KeyServer, clock: Clock
) -> None:
    client = await url_client(make_client, key_server)
    await assert_accepted(client, keys["a"], "r-1")
    assert key_server.requests == 1

    key_server.serve(keys["b"])  # VideoSDK rotates
    clock.advance(120)
    await assert_accepted(client, keys["b"], "r-2")  # the first delivery signed with b
    assert key_server.requests == 2

    # The set is what the endpoint publishes now: a is gone, and asking again within the
    # minute does not fetch again.
    await assert_refused(client, keys["a"], "r-3")
    await assert_accepted(client, keys["b"], "r-4")
    assert key_server.requests == 2


async def test_concurrent_deliveries_signed_with_a_rotated_key_share_one_fetch(
    make_client: ClientFactory, keys: dict[str, Signer], key_server: KeyServer, clock: Clock
) -> None:
    client = await url_client(make_client, key_server)
    await assert_accepted(client, keys["a"], "c-0")
    key_server.serve(keys["b"])
    clock.advance(61)

    responses = await asyncio.gather(
        *(post_signed(client, keys["b"], session_id=f"c-{i}") for i in range(1, 21))
    )

    assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses]
    assert key_server.requests == 2


async def test_refresh_on_bad_signatures_is_at_most_once_a_minute(
    make_client: ClientFactory, keys: dict[str, Signer], key_server: KeyServer, clock: Clock
) -> None:
    client = await url_client(make_client, key_server)
    await assert_accepted(client, keys["a"], "b-0")

    async def burst(label: str, size: int = 50) -> None:
        forged = [post_signed(client, keys["c"], session_id=f"{label}-{i}") for i in range(size)]
        good = [post_signed(client, keys["a"], session_id=f"{label}-good-{i}") for i in range(5)]
        responses = await asyncio.gather(*forged, *good)
        statuses = [r.status_code for r in responses]
        assert statuses == [401] * size + [200] * 5, statuses

    await burst("just-fetched")
    assert key_server.requests == 1  # fetched less than a minute ago
    clock.advance(61)
    await burst("a-minute-later")
    assert key_server.requests == 2  # 50 bad signatures, one fetch
    await burst("again")
    clock.advance(30)
    await burst("30-s-later")
    assert key_server.requests == 2
    clock.advance(31)
    await burst("61-s-later")
    assert key_server.requests == 3


async def test_ttl_refresh_drops_a_key_the_endpoint_no_longer_publishes(
    make_client: ClientFactory, keys: dict[str, Signer], key_server: KeyServer, clock: Clock
) -> None:
    client = await url_client(make_client, key_server, videosdk_public_key_ttl_seconds=600)
    await assert_accepted(client, keys["a"], "t-1")
    key_server.serve(keys["b"])

    clock.advance(599)
    await assert_accepted(client, keys["a"], "t-2")  # younger than the TTL: no fetch
    assert key_server.requests == 1

    clock.advance(2)
    await assert_refused(client, keys["a"], "t-3")  # older than the TTL: fetched again
    assert key_server.requests == 2
    await assert_accepted(client, keys["b"], "t-4")
    assert key_server.requests == 2


async def test_ttl_refresh_of_an_unchanged_key_keeps_verifying(
    make_client: ClientFactory, keys: dict[str, Signer], key_server: KeyServer, clock: Clock
) -> None:
    client = await url_client(make_client, key_server, videosdk_public_key_ttl_seconds=600)
    for hour in range(3):
        await assert_accepted(client, keys["a"], f"u-{hour}")
        clock.advance(601)
    await assert_accepted(client, keys["a"], "u-last")
    assert key_server.requests == 4


FAILURES = {
    "http-500": (500, b"internal error"),
    "json-without-pem": (200, b'{"publicKey": null}'),
    "broken-pem": (200, orjson.dumps({"publicKey": "-----BEGIN PUBLIC KEY-----\nx\n"})),
}


@pytest.mark.parametrize("failure", FAILURES)
async def test_a_failing_key_server_keeps_the_old_key(
    make_client: ClientFactory,
    keys: dict[str, Signer],
    key_server: KeyServer,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    failure: str,
) -> None:
    client = await url_client(make_client, key_server, videosdk_public_key_ttl_seconds=600)
    await assert_accepted(client, keys["a"], "k-1")
    key_server.fail(*FAILURES[failure])

    with caplog.at_level(logging.INFO, logger=PROVIDER_LOGGER):
        clock.advance(601)  # past the TTL: the refresh fails, the old key stays
        await assert_accepted(client, keys["a"], "k-2")
        assert key_server.requests == 2
        await assert_refused(client, keys["c"], "k-3")  # a bad signature: still a 401
        await assert_accepted(client, keys["a"], "k-4")
        assert key_server.requests == 2  # and no second try within the minute
        for minute in range(3):
            clock.advance(61)
            await assert_refused(client, keys["c"], f"k-5-{minute}")
            await assert_accepted(client, keys["a"], f"k-6-{minute}")
        assert key_server.requests == 5  # once a minute while it fails
        assert len(provider_warnings(caplog)) == 1, provider_warnings(caplog)  # logged once

        key_server.serve(keys["b"])  # it recovers, with a rotated key
        clock.advance(61)
        await assert_accepted(client, keys["b"], "k-7")
        assert key_server.requests == 6
    recovered = [r.getMessage() for r in caplog.records if "again (after" in r.getMessage()]
    assert len(recovered) == 1, recovered


async def test_a_key_server_that_went_away_keeps_the_old_key(
    make_client: ClientFactory, keys: dict[str, Signer], key_server: KeyServer, clock: Clock
) -> None:
    client = await url_client(make_client, key_server, videosdk_public_key_ttl_seconds=600)
    await assert_accepted(client, keys["a"], "g-1")
    key_server.close()

    clock.advance(601)
    await assert_accepted(client, keys["a"], "g-2")
    clock.advance(61)
    await assert_refused(client, keys["b"], "g-3")
    await assert_accepted(client, keys["a"], "g-4")


async def test_no_key_ever_fetched_is_still_503_with_retry_after(
    make_client: ClientFactory, keys: dict[str, Signer], key_server: KeyServer, clock: Clock
) -> None:
    key_server.fail(500, b"down")
    client = await url_client(make_client, key_server, retry_after_seconds=7)

    for _ in range(3):
        response = await post_signed(client, keys["a"])
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "public_key_unavailable"
        assert response.headers["retry-after"] == "7"
    assert key_server.requests == 1  # tried again only after 5 s

    key_server.serve(keys["a"])
    clock.advance(5)
    await assert_accepted(client, keys["a"], "n-1")
    assert key_server.requests == 2


# -- The provider's own check (what the intake calls), against the same real key server ---


def url_provider(server: KeyServer) -> public_key.PublicKeyProvider:
    return public_key.PublicKeyProvider(
        Settings(
            videosdk_public_key=None,
            videosdk_public_key_file=None,
            videosdk_public_key_url=server.url,
        )
    )


async def provider_accepts(
    provider: public_key.PublicKeyProvider, signer: Signer, body: bytes
) -> bool:
    try:
        await provider.verify(signer.sign(body), lambda: [body])
    except SignatureError:
        return False
    return True


async def test_provider_picks_up_a_rotation_on_the_first_signature(
    keys: dict[str, Signer], key_server: KeyServer, clock: Clock
) -> None:
    provider = url_provider(key_server)
    assert await provider_accepts(provider, keys["a"], b"one")
    key_server.serve(keys["b"])
    clock.advance(61)

    assert await provider_accepts(provider, keys["b"], b"two")
    assert not await provider_accepts(provider, keys["a"], b"three")
    assert key_server.requests == 2


async def test_provider_refreshes_at_most_once_a_minute_under_a_burst(
    keys: dict[str, Signer], key_server: KeyServer, clock: Clock
) -> None:
    provider = url_provider(key_server)
    assert await provider_accepts(provider, keys["a"], b"first")

    for advance, expected_requests in ((0, 1), (61, 2), (0, 2), (30, 2), (31, 3)):
        clock.advance(advance)
        results = await asyncio.gather(
            *(provider_accepts(provider, keys["c"], b"forged %d" % i) for i in range(100))
        )
        assert not any(results)
        assert key_server.requests == expected_requests, advance


async def test_provider_malformed_header_is_a_signature_error_without_a_fetch(
    keys: dict[str, Signer], key_server: KeyServer, clock: Clock
) -> None:
    provider = url_provider(key_server)
    assert await provider_accepts(provider, keys["a"], b"first")
    clock.advance(61)

    for header in ("", "   ", "not base64!", "YQ"):
        with pytest.raises(SignatureError):
            await provider.verify(header, lambda: [b"body"])
    assert key_server.requests == 1  # no key, old or new, could make these

    # Base64 of another length than the keys': a rotated key may be of another size.
    with pytest.raises(SignatureError, match="3 bytes"):
        await provider.verify("QUJD", lambda: [b"body"])
    assert key_server.requests == 2
