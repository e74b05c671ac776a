"""Fuzz the whole API with schemathesis from the service's own OpenAPI schema: no 5xx, every
response matching the schema, every error in the `{error, detail}` shape."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import response_schema_conformance
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.config import Settings
from app.main import create_app
from tests.conftest import empty_database, make_settings
from tests.support.deliveries import server_env
from tests.support.server import ServerProcess
from tests.support.signing import Signer

# Per operation and generation mode; the whole file stays well under two minutes on 2 cores.
MAX_EXAMPLES = 100
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    # The same examples on every run, so CI cannot fail by luck; set
    # TRACKHOOK_FUZZ_RANDOM=1 to explore new ground locally.
    derandomize=os.environ.get("TRACKHOOK_FUZZ_RANDOM") != "1",
    # No shrinking: it is unbounded in time, and schemathesis prints a curl to reproduce.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
INTAKE = ("POST", "/webhooks/videosdk")
OPERATIONS = [
    INTAKE,
    ("GET", "/v1/recordings"),
    ("GET", "/v1/recordings/{recording_id}"),
    ("GET", "/v1/webhook-events"),
    ("GET", "/v1/changes"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
]
# An event stream never ends, so it is fuzzed against a real server (reading each answer's
# status and headers only): test_fuzz_the_change_stream_against_a_server.
STREAM = ("GET", "/v1/changes/stream")
MAX_BODY_BYTES = 64 * 1024

# The fuzzer runs against PostgreSQL, the backend production uses.
postgresql_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def openapi_document() -> dict[str, Any]:
    document: dict[str, Any] = create_app(Settings(database_url="sqlite://")).openapi()
    return document


def refs_in(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs_in(item)


def resolves(document: dict[str, Any], ref: str) -> bool:
    if not ref.startswith("#/"):
        return False
    node: object = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_schema_lists_exactly_the_fuzzed_operations() -> None:
    """A new endpoint must be added to OPERATIONS, so that it is fuzzed too."""
    paths = openapi_document()["paths"]
    found = {(method.upper(), path) for path, item in paths.items() for method in item}
    assert found == {*OPERATIONS, STREAM}


def test_every_schema_reference_resolves() -> None:
    """OpenAPI resolves `#/...` from the document root; a `$ref` into a nested `$defs`
    dangles, and then clients (and the fuzzer) cannot see the request body at all."""
    document = openapi_document()
    dangling = sorted({ref for ref in refs_in(document) if not resolves(document, ref)})
    assert dangling == []


def assert_error_shape(case: Case, status: int, body: object) -> None:
    if status < 400:
        return
    assert isinstance(body, dict) and set(body) == {"error", "detail"}, (case.path, body)
    assert isinstance(body["error"], str) and body["error"], body


def fuzz(
    app: Any, method: str, path: str, modes: list[GenerationMode], expect: Any = None
) -> dict[int, int]:
    """Run schemathesis against one operation of the ASGI app; returns status counts."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operation = schema[path][method]
    statuses: dict[int, int] = {}
    for mode in modes:

        @FUZZ_SETTINGS
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Case) -> None:
            shorten_wait(case)
            response = case.call()
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance]
            )
            body = response.json() if response.content else None
            assert_error_shape(case, response.status_code, body)
            if expect is not None:
                expect(response.request.body, response.status_code, body)

        run()
    return statuses


def shorten_wait(case: Case) -> None:
    """A valid `wait` on /v1/changes holds the request that long when nothing changes: keep
    it to a few milliseconds so that the examples do not sleep (invalid ones stay)."""
    query = case.query if isinstance(case.query, dict) else {}
    try:
        wait = float(query.get("wait", ""))
    except (TypeError, ValueError):
        return
    if 0 < wait <= 60:
        query["wait"] = 0.005


def modes_for(path: str) -> list[GenerationMode]:
    # Nothing to make invalid without query parameters or a body (any path segment is a
    # string, so the recording id has no invalid form either: the app answers 404).
    if path in ("/healthz", "/readyz", "/v1/recordings/{recording_id}"):
        return [GenerationMode.POSITIVE]
    return [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


async def run_fuzz(
    settings_: Settings, method: str, path: str, expect: Any = None
) -> dict[int, int]:
    app = create_app(settings_)
    try:
        # schemathesis drives the app (and its lifespan) on its own event loop thread.
        return await asyncio.to_thread(fuzz, app, method, path, modes_for(path), expect)
    finally:
        await asyncio.to_thread(schemathesis_asgi.shutdown_lifespans)


@postgresql_only
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
async def test_fuzz_with_signatures_off(
    database_url: str, signer: Signer, method: str, path: str
) -> None:
    """Intake bodies get past the signature, so validation and storage are exercised."""
    await empty_database(database_url)
    app_settings = make_settings(
        database_url, signer, webhook_signature="off", max_body_bytes=MAX_BODY_BYTES
    )
    statuses = await run_fuzz(app_settings, method, path)
    print(f"{method} {path}: {dict(sorted(statuses.items()))}")  # shown with -rP
    assert sum(statuses.values()) > 0
    assert all(status < 500 for status in statuses)
    if (method, path) == INTAKE:
        # Generated bodies really reach validation and storage (not only 400s).
        assert statuses.get(200, 0) > 0 and statuses.get(422, 0) > 0


@postgresql_only
async def test_fuzz_intake_with_signatures_required(database_url: str, signer: Signer) -> None:
    """No generated request carries a valid signature: each is a 401 (or a 413 for a body
    over the limit, which is checked first), never a 5xx, and nothing is stored."""
    await empty_database(database_url)
    app_settings = make_settings(database_url, signer, max_body_bytes=MAX_BODY_BYTES)

    def expect(sent: bytes | str | None, status: int, body: Any) -> None:
        size = len(sent.encode() if isinstance(sent, str) else sent or b"")
        if size > MAX_BODY_BYTES:
            assert (status, body["error"]) == (413, "payload_too_large"), body
        else:
            assert status == 401, body
            assert body["error"] in {"signature_missing", "signature_invalid"}, body

    statuses = await run_fuzz(app_settings, *INTAKE, expect=expect)
    print(f"intake with signatures required: {dict(sorted(statuses.items()))}")
    assert statuses.get(401, 0) > 0

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            counts = [
                (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
                for table in ("webhook_events", "recordings")
            ]
    finally:
        await engine.dispose()
    assert counts == [0, 0]


async def test_fuzz_the_change_stream_against_a_server(
    shared_database_url: str, signer: Signer, servers: list[ServerProcess]
) -> None:
    server = ServerProcess(env=server_env(shared_database_url, signer), workers=1)
    servers.append(server)
    await asyncio.to_thread(server.start)
    operation = schemathesis.openapi.from_dict(openapi_document())[STREAM[1]][STREAM[0]]
    statuses: dict[int, int] = {}

    def fuzz_stream() -> None:
        with httpx.Client(timeout=10) as http:
            for mode in modes_for(STREAM[1]):

                @settings(FUZZ_SETTINGS, max_examples=MAX_EXAMPLES // 2)
                @given(case=operation.as_strategy(generation_mode=mode))
                def run(case: Case) -> None:
                    sent = case.as_transport_kwargs(base_url=server.base_url)
                    with http.stream(
                        sent["method"], sent["url"], params=sent.get("params"),
                        headers=sent.get("headers"),
                    ) as response:  # fmt: skip
                        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                        assert response.status_code < 500, case.as_curl_command()
                        if response.status_code == 200:
                            assert response.headers["content-type"].startswith("text/event-stream")
                        else:
                            assert_error_shape(
                                case, response.status_code, response.read() and response.json()
                            )

                run()

    await asyncio.to_thread(fuzz_stream)
    print(f"GET /v1/changes/stream: {dict(sorted(statuses.items()))}")
    assert statuses.get(200, 0) > 0 and statuses.get(422, 0) > 0
    assert all(status < 500 for status in statuses)
