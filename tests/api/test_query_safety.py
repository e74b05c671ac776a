"""Query-side safety: bearer tokens compared in constant time, no secret in the logs, and
hostile filter values (SQL metacharacters, unicode, NUL, huge) answered precisely."""

from __future__ import annotations

import asyncio
import base64
import hmac
from pathlib import Path
from types import SimpleNamespace

import httpx
import orjson
import pytest

from app.api import auth
from tests.conftest import ClientFactory, empty_database
from tests.support.client import WebhookClient
from tests.support.payloads import track_webhook
from tests.support.server import ServerProcess
from tests.support.signing import Signer

TOKENS = ["alpha-token-0000000001", "bravo-token-0000000002", "charlie-tok-3"]
LIST_PATHS = ["/v1/recordings", "/v1/webhook-events"]


@pytest.fixture
async def guarded(make_client: ClientFactory) -> WebhookClient:
    return await make_client(api_tokens=TOKENS)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def same_length_wrong(token: str) -> str:
    return token[:-1] + ("x" if token[-1] != "x" else "y")


# -- API_TOKENS --------------------------------------------------------------------------


async def test_each_configured_token_is_accepted(guarded: WebhookClient) -> None:
    for token in TOKENS:
        for path in LIST_PATHS:
            for scheme in ("Bearer", "bearer"):
                headers = {"authorization": f"{scheme} {token}"}
                response = await guarded.http.get(path, headers=headers)
                assert response.status_code == 200, (token, path, response.text)
                assert response.json() == {"items": [], "nextCursor": None}


WRONG_TOKENS = [
    pytest.param(same_length_wrong(TOKENS[0]), id="same-length-as-first"),
    pytest.param(same_length_wrong(TOKENS[2]), id="same-length-as-last"),
    pytest.param(TOKENS[0].upper(), id="other-case"),
    pytest.param(TOKENS[1][:-1], id="prefix"),
    pytest.param(TOKENS[1] + "0", id="extended"),
    pytest.param("x", id="one-char"),
    pytest.param("x" * 4000, id="4000-chars"),
    pytest.param(",".join(TOKENS), id="all-joined"),
    pytest.param(f"{TOKENS[0]} {TOKENS[1]}", id="two-tokens"),
    pytest.param("' OR 1=1 --", id="sql"),
]


@pytest.mark.parametrize("token", WRONG_TOKENS)
async def test_wrong_token_of_any_length_is_401(guarded: WebhookClient, token: str) -> None:
    for path in LIST_PATHS:
        response = await guarded.http.get(path, headers=bearer(token))
        assert response.status_code == 401, response.text
        assert response.json() == {
            "error": "invalid_token",
            "detail": "the bearer token is not valid",
        }
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="absent"),
        pytest.param(b"", id="empty"),
        pytest.param(b"Bearer", id="scheme-only"),
        pytest.param(b"Bearer    ", id="blank-credentials"),
        pytest.param(f"Basic {TOKENS[0]}".encode(), id="basic"),
        pytest.param(TOKENS[0].encode(), id="no-scheme"),
    ],
)
async def test_missing_token_is_401(guarded: WebhookClient, authorization: bytes | None) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    response = await guarded.http.get("/v1/recordings", headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "missing_token"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_non_ascii_token_is_401_not_500(guarded: WebhookClient) -> None:
    # Header bytes arrive as latin-1; a naive str compare_digest would raise TypeError.
    response = await guarded.http.get(
        "/v1/recordings", headers={"authorization": b"Bearer caf\xe9-token-000000001"}
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_token"


async def test_token_guards_a_single_recording_too(guarded: WebhookClient) -> None:
    answer = await guarded.deliver(track_webhook("started"))  # intake needs no token
    path = f"/v1/recordings/{answer['recordingId']}"
    assert (await guarded.http.get(path)).status_code == 401
    assert (
        await guarded.http.get(path, headers=bearer(same_length_wrong(TOKENS[1])))
    ).status_code == 401
    response = await guarded.http.get(path, headers=bearer(TOKENS[1]))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == answer["recordingId"]


async def test_every_token_is_compared_with_compare_digest(
    guarded: WebhookClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No early exit on a match and no plain `==`: each request runs hmac.compare_digest
    once per configured token, on bytes, whatever it presents."""
    calls: list[tuple[bytes, bytes]] = []

    def spy(presented: bytes, expected: bytes) -> bool:
        assert isinstance(presented, bytes) and isinstance(expected, bytes)
        calls.append((presented, expected))
        return hmac.compare_digest(presented, expected)

    monkeypatch.setattr(auth, "hmac", SimpleNamespace(compare_digest=spy))
    configured = [token.encode() for token in TOKENS]
    for presented, status in [
        (TOKENS[0], 200),
        (TOKENS[2], 200),
        (same_length_wrong(TOKENS[0]), 401),
        ("short", 401),
    ]:
        calls.clear()
        response = await guarded.http.get("/v1/recordings", headers=bearer(presented))
        assert response.status_code == status, response.text
        assert [expected for _presented, expected in calls] == configured
        assert {sent for sent, _expected in calls} == {presented.encode()}


# -- nothing secret in the logs -----------------------------------------------------------


async def test_no_token_pem_or_signature_is_logged(
    database_url: str, signer: Signer, tmp_path: Path
) -> None:
    await empty_database(database_url)
    log_path = tmp_path / "server.log"
    server = ServerProcess(
        env={
            "DATABASE_URL": database_url,
            "LOG_LEVEL": "DEBUG",
            "API_TOKENS": ",".join(TOKENS),
            "VIDEOSDK_PUBLIC_KEY": signer.public_pem,
            "WEBHOOK_SIGNATURE": "required",
        },
        log_path=log_path,
    )
    wrong_token = "presented-but-wrong-token-7f3a9c"
    signatures: list[str] = []
    await asyncio.to_thread(server.start)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:

            async def post(raw: bytes, signature: str) -> int:
                signatures.append(signature)
                response = await http.post(
                    "/webhooks/videosdk",
                    content=raw,
                    headers={"content-type": "application/json", "videosdk-signature": signature},
                )
                return response.status_code

            for status in ("starting", "started", "stopped"):
                raw = orjson.dumps(track_webhook(status))
                assert await post(raw, signer.sign(raw)) == 200
            raw = orjson.dumps(track_webhook("failed"))
            assert await post(raw, signer.sign(raw + b" ")) == 401  # valid for another body
            assert await post(raw, Signer.generate().sign(raw)) == 401  # another key
            bad = orjson.dumps(track_webhook("started", kind="hologram"))
            assert await post(bad, signer.sign(bad)) == 422
            # Deeper than the parser goes (1,024 levels): a 400.
            deep = b'{"webhookType":"x","e":' + b"[" * 1100 + b"]" * 1100 + b"}"
            assert await post(deep, signer.sign(deep)) == 400

            for token in TOKENS:
                for path in LIST_PATHS:
                    assert (await http.get(path, headers=bearer(token))).status_code == 200
            assert (
                await http.get("/v1/recordings", headers=bearer(wrong_token))
            ).status_code == 401
            assert (await http.get("/v1/webhook-events")).status_code == 401
    finally:
        await asyncio.to_thread(server.stop)

    log = log_path.read_text(errors="replace")
    # The log is really being written (else the checks below would pass vacuously).
    assert "VIDEOSDK_PUBLIC_KEY" in log, log
    for token in [*TOKENS, wrong_token]:
        assert token not in log
    pem_lines = [line for line in signer.public_pem.splitlines() if not line.startswith("-----")]
    assert pem_lines
    for line in pem_lines:
        assert line not in log
    assert "".join(pem_lines)[:40] not in log.replace("\n", "")
    for signature in signatures:
        assert signature not in log
        assert signature[:32] not in log


# -- filter values ------------------------------------------------------------------------

SQL_METACHARACTERS = [
    "' OR 1=1 --",
    "' OR '1'='1",
    '" OR ""="',
    "%",
    "%%",
    "_",
    "\\",
    "\\%",
    "*",
    ";DROP TABLE recordings;",
    "seed-session' --",
    "seed%",
    "seed-sessio_",
]
UNICODE = [
    "\U0001f600",  # emoji
    "\U0001f469\u200d\U0001f3a4",  # ZWJ sequence
    "\u202eseed-session\u202c",  # RTL override around a real value
    "\u05e9\u05dc\u05d5\u05dd",  # Hebrew (RTL)
    "e\u0301",  # combining acute
    "\ufeffseed-session",  # BOM in front of a real value
    "\u4e2d\u6587",
]
HUGE = "a" * 10_000

# Exact-match text filters: a value matching nothing gives an empty page.
TEXT_FILTERS = [
    ("/v1/recordings", "meetingId"),
    ("/v1/recordings", "sessionId"),
    ("/v1/recordings", "participantId"),
    ("/v1/webhook-events", "sessionId"),
    ("/v1/webhook-events", "webhookType"),
]
# Typed filters: any of these values is a 422 naming the parameter.
TYPED_FILTERS = [
    ("/v1/recordings", "kind"),
    ("/v1/recordings", "status"),
    ("/v1/recordings", "updatedAfter"),
    ("/v1/recordings", "updatedBefore"),
    ("/v1/recordings", "stuck"),
    ("/v1/recordings", "limit"),
    ("/v1/recordings", "cursor"),
    ("/v1/webhook-events", "outcome"),
    ("/v1/webhook-events", "limit"),
    ("/v1/webhook-events", "cursor"),
]
ALL_FILTERS = TEXT_FILTERS + TYPED_FILTERS
REPEATABLE = {"status", "outcome", "webhookType"}


def filter_id(path: str, name: str) -> str:
    return f"{path.rsplit('/', 1)[-1]}-{name}"


def field_of(name: str) -> str:
    # FastAPI locates an error in a repeatable parameter at its index.
    return f"query.{name}.0" if name in REPEATABLE else f"query.{name}"


async def seed(client: WebhookClient) -> None:
    """One recording and one event, with ids the hostile values partly resemble."""
    document = track_webhook(
        "started", session_id="seed-session", meeting_id="seed-meeting", participant_id="seed-p"
    )
    assert (await client.deliver(document))["status"] == "applied"


async def assert_seed_intact(client: WebhookClient) -> None:
    recordings = (await client.get("/v1/recordings")).json()["items"]
    events = (await client.get("/v1/webhook-events")).json()["items"]
    assert [r["sessionId"] for r in recordings] == ["seed-session"]
    assert [e["sessionId"] for e in events] == ["seed-session"]


def assert_422_naming(response: httpx.Response, name: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_failed", body
    assert [item["field"] for item in body["detail"]] == [field_of(name)], body


@pytest.mark.parametrize(("path", "name"), TEXT_FILTERS, ids=[filter_id(*f) for f in TEXT_FILTERS])
async def test_text_filters_match_hostile_values_literally(
    client: WebhookClient, path: str, name: str
) -> None:
    await seed(client)
    for value in [*SQL_METACHARACTERS, *UNICODE]:
        response = await client.get(path, **{name: value})
        assert response.status_code == 200, (value, response.text)
        assert response.json() == {"items": [], "nextCursor": None}, value
    await assert_seed_intact(client)


@pytest.mark.parametrize(
    ("path", "name"), TYPED_FILTERS, ids=[filter_id(*f) for f in TYPED_FILTERS]
)
async def test_typed_filters_refuse_hostile_values(
    client: WebhookClient, path: str, name: str
) -> None:
    await seed(client)
    for value in [*SQL_METACHARACTERS, *UNICODE]:
        assert_422_naming(await client.get(path, **{name: value}), name)
    await assert_seed_intact(client)


@pytest.mark.parametrize(("path", "name"), ALL_FILTERS, ids=[filter_id(*f) for f in ALL_FILTERS])
async def test_nul_and_huge_values_are_422_naming_the_parameter(
    client: WebhookClient, path: str, name: str
) -> None:
    await seed(client)
    for value in ("\x00", "seed-session\x00", HUGE, "9" * 10_000):
        assert_422_naming(await client.get(path, **{name: value}), name)
    await assert_seed_intact(client)


@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59.999999-00:01",
    ],
)
async def test_updated_after_beyond_utc_range_is_422(client: WebhookClient, value: str) -> None:
    """Valid ISO-8601, but not representable in UTC: a client error, not an overflow 500."""
    await seed(client)
    assert_422_naming(await client.get("/v1/recordings", updatedAfter=value), "updatedAfter")


@pytest.mark.parametrize("stamp", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
async def test_cursor_beyond_utc_range_is_422(client: WebhookClient, stamp: str) -> None:
    await seed(client)
    forged = base64.urlsafe_b64encode(orjson.dumps([stamp, 1])).decode().rstrip("=")
    assert_422_naming(await client.get("/v1/recordings", cursor=forged), "cursor")


async def test_pattern_characters_in_stored_ids_match_exactly(client: WebhookClient) -> None:
    """A stored `%` or `_` is an ordinary character: equality, never LIKE."""
    hostile = {"session_id": "50%_off\\x", "meeting_id": "m%_\\", "participant_id": "p_%'"}
    plain = {"session_id": "50Xaoff\\x", "meeting_id": "mXa\\", "participant_id": "pab'"}
    ids = {}
    for name, values in (("hostile", hostile), ("plain", plain)):
        answer = await client.deliver(track_webhook("started", **values))
        ids[name] = answer["recordingId"]

    for param, key in (
        ("sessionId", "session_id"),
        ("meetingId", "meeting_id"),
        ("participantId", "participant_id"),
    ):
        # As a LIKE pattern the hostile value would also match the plain one.
        for values, expected in ((hostile, ids["hostile"]), (plain, ids["plain"])):
            response = await client.get("/v1/recordings", **{param: values[key]})
            assert [r["id"] for r in response.json()["items"]] == [expected], (param, values)
        for pattern in ("%", "_", hostile[key][:2] + "%", plain[key].upper()):
            response = await client.get("/v1/recordings", **{param: pattern})
            assert response.json()["items"] == [], (param, pattern)

    events = (await client.get("/v1/webhook-events", sessionId=hostile["session_id"])).json()
    assert [e["recordingId"] for e in events["items"]] == [ids["hostile"]]
    assert (await client.get("/v1/webhook-events", sessionId="50%")).json()["items"] == []


async def test_unicode_ids_match_exactly_without_normalisation(client: WebhookClient) -> None:
    decomposed = "e\u0301-\U0001f469\u200d\U0001f3a4-\u202eabc\u202c-\u05e9"
    composed = "\u00e9-\U0001f469\u200d\U0001f3a4-\u202eabc\u202c-\u05e9"
    answer = await client.deliver(track_webhook("started", participant_id=decomposed))

    found = (await client.get("/v1/recordings", participantId=decomposed)).json()["items"]
    assert [r["id"] for r in found] == [answer["recordingId"]]
    assert found[0]["participantId"] == decomposed
    assert (await client.get("/v1/recordings", participantId=composed)).json()["items"] == []


async def test_stored_unknown_webhook_type_with_metacharacters_matches_exactly(
    client: WebhookClient,
) -> None:
    for webhook_type in ("odd%type", "oddXtype", "odd_type'; --"):
        assert (await client.deliver({"webhookType": webhook_type}))["status"] == "ignored"
    for value, expected in (
        ("odd%type", ["odd%type"]),
        ("odd_type'; --", ["odd_type'; --"]),
        ("odd_type", []),
        ("%", []),
    ):
        items = (await client.get("/v1/webhook-events", webhookType=value)).json()["items"]
        assert [e["webhookType"] for e in items] == expected, value


async def test_a_filter_value_of_255_unicode_chars_is_accepted(client: WebhookClient) -> None:
    """The limit counts characters, not bytes: 255 four-byte emoji are a valid id."""
    session = "\U0001f600" * 255
    answer = await client.deliver(track_webhook("started", session_id=session))
    found = (await client.get("/v1/recordings", sessionId=session)).json()["items"]
    assert [r["id"] for r in found] == [answer["recordingId"]]
    response = await client.get("/v1/recordings", sessionId=session + "\U0001f600")
    assert_422_naming(response, "sessionId")


def test_auth_module_compares_with_hmac() -> None:
    """The token check itself, without HTTP: equal only on an exact match of any token."""
    assert auth.token_matches(TOKENS[1], TOKENS)
    assert not auth.token_matches(same_length_wrong(TOKENS[1]), TOKENS)
    assert not auth.token_matches("", TOKENS)
    assert not auth.token_matches(TOKENS[0], [])
