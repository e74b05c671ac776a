"""The request id: `X-Request-ID` as sent when it is sane, else a new one; echoed on every
answer and bound for the request's log lines (app.core.logs.REQUEST_ID).

Outermost, outside FastAPI's error middleware too (app.main), so that every answer carries
it: the intake lane's, the shutdown guard's 503, an unexpected 500."""

from __future__ import annotations

import random
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.logs import REQUEST_ID

HEADER = b"x-request-id"
MAX_LENGTH = 128
# Visible ASCII only: no space or control character can split a log line or a header.
_SANE = re.compile(rb"[\x21-\x7e]{1,%d}" % MAX_LENGTH).fullmatch


def request_id_of(scope: Scope) -> str:
    value: bytes
    for name, value in scope["headers"]:
        if name == HEADER:
            if _SANE(value):
                return value.decode("ascii")
            break
    # 32 random hex digits, as uuid4().hex was, without its system call on every request:
    # a correlation id, not a secret (each worker's generator is seeded on its own).
    return f"{random.getrandbits(128):032x}"


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        header = (HEADER, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        token = REQUEST_ID.set(request_id)
        await self.app(scope, receive, send_with_id)
        # Only on a normal return: after an exception the server logs its traceback in this
        # same task, and that line belongs to the request too.
        REQUEST_ID.reset(token)
