"""The request id (issue 11, item 2): taken from `X-Request-ID` when it is sane, generated
otherwise, echoed on every answer (the intake lane's, FastAPI's, the shutdown guard's 503,
an unexpected 500) and carried by every log line of its request."""

from __future__ import annotations

import logging
import re

import httpx
import pytest

from app.server.shutdown import ShutdownGuard
from tests.logs.conftest import GENERATED_ID, AppFactory, json_lines
from tests.support.payloads import track_webhook

SANE_IDS = [
    "req-0001",
    "a" * 128,  # the longest kept
    "trace:4bf92f3577b34da6/00f067aa0ba902b7;sampled=1",
    "~!#$%&'*+-.^_`|0123456789",
]
INSANE_IDS = [
    pytest.param(b"", id="empty"),
    pytest.param(b"a" * 129, id="too-long"),
    pytest.param(b"two words", id="space"),
    pytest.param("caf\u00e9".encode("latin-1"), id="not-ascii"),
    pytest.param(b"tab\there", id="control"),
]


def echoed_id(response: httpx.Response) -> str:
    values = response.headers.get_list("x-request-id")
    assert len(values) == 1, (response.status_code, response.headers)
    return values[0]


@pytest.mark.parametrize("request_id", SANE_IDS)
async def test_a_sane_id_is_echoed_on_every_kind_of_answer(
    make_app: AppFactory, request_id: str
) -> None:
    served = await make_app()
    sent = {"x-request-id": request_id}
    answers = {
        "intake 200": await served.client.post_raw(
            b'{"webhookType":"other-type","data":{}}', headers=sent
        ),
        "intake 401": await served.client.post_raw(b"{}", signature=None, headers=sent),
        "fastapi 200": await served.http.get("/healthz", headers=sent),
        "fastapi 404": await served.http.get("/nowhere", headers=sent),
        "fastapi 405": await served.http.get("/webhooks/videosdk", headers=sent),
        "fastapi 422": await served.http.get("/v1/recordings?limit=0", headers=sent),
    }

    statuses = {name: response.status_code for name, response in answers.items()}
    assert statuses == {
        "intake 200": 200,
        "intake 401": 401,
        "fastapi 200": 200,
        "fastapi 404": 404,
        "fastapi 405": 405,
        "fastapi 422": 422,
    }
    assert {name: echoed_id(response) for name, response in answers.items()} == dict.fromkeys(
        answers, request_id
    )


@pytest.mark.parametrize("sent", INSANE_IDS)
async def test_an_insane_id_is_replaced_by_a_generated_one(
    make_app: AppFactory, sent: bytes
) -> None:
    served = await make_app()
    response = await served.http.get("/healthz", headers=[(b"x-request-id", sent)])

    assert response.status_code == 200
    assert re.fullmatch(GENERATED_ID, echoed_id(response))


async def test_without_an_id_each_request_gets_its_own(make_app: AppFactory) -> None:
    served = await make_app()
    ids = [echoed_id(await served.http.get("/healthz")) for _ in range(3)]

    assert all(re.fullmatch(GENERATED_ID, request_id) for request_id in ids), ids
    assert len(set(ids)) == 3


async def test_the_shutdown_guards_503_carries_the_id(make_app: AppFactory) -> None:
    served = await make_app()
    await served.http.get("/healthz")  # builds the middleware stack
    guard = served.app.middleware_stack
    while not isinstance(guard, ShutdownGuard):
        guard = guard.app  # type: ignore[union-attr]
    guard.begin_draining()

    webhook = await served.client.post_raw(b"{}", headers={"x-request-id": "draining-1"})
    probe = await served.http.get("/readyz", headers={"x-request-id": "draining-2"})

    assert (webhook.status_code, webhook.json()["error"]) == (503, "shutting_down")
    assert (probe.status_code, probe.json()["error"]) == (503, "shutting_down")
    assert (echoed_id(webhook), echoed_id(probe)) == ("draining-1", "draining-2")


async def test_an_unexpected_500_carries_the_id(make_app: AppFactory) -> None:
    served = await make_app()

    async def broken() -> None:
        raise RuntimeError("a bug")

    served.app.add_api_route("/test/broken", broken)
    response = await served.http.get("/test/broken", headers={"x-request-id": "bug-1"})

    assert response.status_code == 500
    assert echoed_id(response) == "bug-1"


async def test_every_line_of_a_request_carries_its_id(
    make_app: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    served = await make_app(log_format="json")

    async def chatty() -> dict[str, str]:
        logging.getLogger("tests.logs.chatty").info("first line of the request")
        logging.getLogger("app.somewhere").warning("second line of the request")
        return {"status": "ok"}

    served.app.add_api_route("/test/chatty", chatty)
    capsys.readouterr()
    await served.http.get("/test/chatty", headers={"x-request-id": "chatty-1"})
    generated = echoed_id(await served.http.get("/test/chatty"))
    webhook = await served.client.post(track_webhook("starting"))
    lines = json_lines(capsys.readouterr().err)

    chatty_lines = [line for line in lines if line["message"].endswith("line of the request")]
    assert [line["request_id"] for line in chatty_lines] == [
        "chatty-1",
        "chatty-1",
        generated,
        generated,
    ]
    (intake,) = [line for line in lines if line["logger"] == "trackhook.intake"]
    assert intake["request_id"] == echoed_id(webhook)
    # and the id does not outlive its request
    logging.getLogger("tests.logs.chatty").warning("after the requests")
    (after,) = json_lines(capsys.readouterr().err)
    assert after["request_id"] is None
