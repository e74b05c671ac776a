"""uvicorn's httptools protocol with a bound on reading a request, and JSON errors.

uvicorn has no timeout for reading a request: a connection that never finishes its headers,
or trickles its body, is held for as long as the client likes, and so is one that sends
nothing at all (uvicorn's keep-alive timer only starts after a first answer). Here every
request must arrive complete within REQUEST_READ_TIMEOUT_SECONDS of the connection opening
or of the previous answer finishing; then a request that has begun gets a 408, and a
connection that has sent nothing is closed. Nothing of a request reaches the database
before it is complete (the intake reads the whole body first), so slow clients hold
sockets, never database connections.

uvicorn's own answer to a malformed request, a plain-text 400, is the service's JSON error
here, `bad_content_length` when the Content-Length is at fault; and a request's head
(request line and headers) larger than MAX_HEAD_BYTES gets a 431.
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.core.http import error_document
from app.server.settings import serving_settings

# A connection that has not sent a byte when the server starts to stop gets this long for
# its first request (a client that connected just before), not the whole read bound.
FRESH_CONNECTION_GRACE_SECONDS = 1.0
# The request line and headers together (httptools has no limit of its own: a 10 MB header
# was read, and echoed back by a 415). nginx's default is 32 KiB, h11's 16 KiB.
MAX_HEAD_BYTES = 64 * 1024
# After an error of its own the server sends FIN and reads (and drops) what the client is
# still sending for up to this long, then closes (nginx's "lingering close"): closing with
# unread data makes the kernel reset the connection, and the reset can overtake the answer.
LINGER_SECONDS = 2.0


class TrackhookProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, object],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.read_timeout = serving_settings().request_read_timeout_seconds
        self._read_timer: asyncio.TimerHandle | None = None
        self._reading = False  # a request has begun and is not complete yet
        self._answered = False  # an answer has been completed on this connection
        self._stopping = False  # the server is stopping: answer what comes, then close
        self._lingering = False  # answered with an error: drop what comes, then close
        self._in_head = True  # between requests or inside a request's head
        self._head_bytes = 0

    # The read bound

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_read_timer(self.read_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading = True
        if self._read_timer is None:
            self._arm_read_timer(self.read_timeout)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        counting = self._in_head
        super().data_received(data)
        if counting and self._in_head and not self.transport.is_closing():
            # The head is still not complete after this chunk: all of it was head.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                detail = f"the request line and headers are larger than {MAX_HEAD_BYTES} bytes"
                self._send_error(431, "headers_too_large", detail)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        super().on_headers_complete()
        if self._stopping and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        self._reading = False
        self._in_head = True
        self._disarm_read_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._answered = True
        super().on_response_complete()
        # The next request's time starts now (a request still arriving keeps its own).
        if not self._reading and not self.transport.is_closing():
            self._disarm_read_timer()
            self._arm_read_timer(self.read_timeout)

    def handle_websocket_upgrade(self) -> None:
        self._disarm_read_timer()
        super().handle_websocket_upgrade()

    def _arm_read_timer(self, seconds: float) -> None:
        self._read_timer = self.loop.call_later(seconds, self._read_timed_out)

    def _disarm_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing() or self._lingering:
            return
        cycle = self.cycle
        if not self._reading:
            if self.pipeline or (cycle is not None and not cycle.response_complete):
                return  # a complete request is being answered; its answer re-arms the bound
            self.transport.close()  # idle: nothing was asked, nothing to answer
        elif cycle is not None and cycle.response_started and not cycle.response_complete:
            self.transport.close()  # an answer is on its way: it cannot become a 408
        else:
            detail = f"the request was not complete within {self.read_timeout:g} s"
            self._send_error(408, "request_timeout", detail)

    # Errors

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this in data_received's `except httptools.HttpParserError`: the
        # exception being handled is the parser's, and its message says what was wrong.
        error = sys.exc_info()[1]
        reason = str(error) if isinstance(error, httptools.HttpParserError) and str(error) else msg
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            self.transport.close()
            return
        code = "bad_content_length" if "Content-Length" in reason else "bad_request"
        self._send_error(400, code, f"malformed request: {reason}")

    def _send_error(self, status: int, error: str, detail: str) -> None:
        if self._lingering:
            return
        body = orjson.dumps(error_document(error, detail))
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The app's request is over: it reads a disconnect, and its answer goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        self._linger()

    def _linger(self) -> None:
        self._lingering = True
        self._disarm_read_timer()
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        # The client's FIN closes it sooner (eof_received returns None).
        self._read_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    # Stopping

    def shutdown(self) -> None:
        """The server is stopping. A request on its way (begun, or the first one of a
        connection opened just before) is still read and answered (the app, draining,
        answers 503), then the connection closes; an idle kept-alive one closes now."""
        if self._lingering:
            return  # it closes by itself
        cycle = self.cycle
        waiting = (cycle is None or cycle.response_complete) and not self.pipeline
        if waiting and (self._reading or not self._answered):
            self._stopping = True
            if not self._reading:
                self._disarm_read_timer()
                self._arm_read_timer(min(self.read_timeout, FRESH_CONNECTION_GRACE_SECONDS))
            return
        super().shutdown()
