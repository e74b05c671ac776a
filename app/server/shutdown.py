"""The app's side of a graceful shutdown: one draining state, from the stop signal on.

uvicorn tells the app nothing before it drains (the lifespan's shutdown comes after the
drain), and once told to stop it closes its listener at once: a connection the kernel has
queued by then is reset, a client's request on a fresh connection dropped. So
`ShutdownGuard` puts itself in front of the SIGTERM/SIGINT handler that uvicorn has
installed by the time the lifespan starts (in every way uvicorn runs the app: one process,
each worker of `--workers`, `uvicorn app.main:app`; sse-starlette's patch of
`Server.handle_exit` only takes effect when the app is imported before the server installs
its handlers, which uvicorn's workers do not do), and from the signal on:

- every new request is answered at once: a JSON 503 `shutting_down` with `Retry-After` and
  `Connection: close`, `/readyz` included (a load balancer takes the replica out), while
  the server goes on listening;
- the requests in flight go on, and their answers close their connections;
- `ANSWER_BEFORE_SECONDS` before GRACEFUL_TIMEOUT_SECONDS, the requests still running are
  cancelled and answered the same 503 (unless their answer has started);
- once no request is in flight, the signal is passed on to uvicorn, which closes its
  listener and the idle connections, runs the lifespan's shutdown and exits;
- at GRACEFUL_TIMEOUT_SECONDS the process exits, whatever is still left to finish.

A second SIGINT is passed on at once (uvicorn then stops waiting for the drain).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from sse_starlette.sse import AppStatus
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.http import error_response, retry_after_seconds
from app.server.settings import DEFAULT_GRACEFUL_TIMEOUT, serving_settings

logger = logging.getLogger("trackhook")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Requests still running this long before the graceful timeout are answered 503 (half the
# timeout when it is shorter than twice this).
ANSWER_BEFORE_SECONDS = 1.0
# A turned-away request's body is read (and dropped) up to this much before the answer:
# closing a socket with unread data makes the kernel reset the connection, and the reset
# can reach the client before the answer does.
DISCARD_BODY_LIMIT = 1024 * 1024
SHUTTING_DOWN_DETAIL = "the server is shutting down; send the request again"
_CONNECTION_CLOSE = (b"connection", b"close")

SignalHandler = Callable[[int, FrameType | None], Any]


class _InFlight:
    __slots__ = ("answering", "expired")

    def __init__(self) -> None:
        self.answering = False  # the answer has started: it can no longer be a 503
        self.expired = False  # cancelled by the deadline


class ShutdownGuard:
    """Pure ASGI, outermost: it sees every request, the intake lane's included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.draining = False
        self._in_flight: dict[asyncio.Task[Any], _InFlight] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._chained: dict[int, SignalHandler] = {}
        self._graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT
        self._began_at = 0.0
        self._drained = asyncio.Event()  # set when the last request in flight ends
        self._stopping: asyncio.Task[None] | None = None
        self._passed_on = False  # the server has been told to stop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self.draining:
                await self._turn_away(scope, receive, send)
            else:
                await self._serve(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.app(scope, self._watching_lifespan(receive), send)
        else:
            await self.app(scope, receive, send)

    # The draining state

    def watch_signals(self, graceful_timeout: float) -> None:
        """Chain onto the stop signals' handlers (the server's, by the time the lifespan
        starts): from the signal on, drain, and be gone by `graceful_timeout`."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        self._graceful_timeout = graceful_timeout
        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if callable(previous):
                self._chained[signum] = previous
                signal.signal(signum, self._on_stop_signal)

    def unwatch_signals(self) -> None:
        for signum, previous in self._chained.items():
            if signal.getsignal(signum) == self._on_stop_signal:
                signal.signal(signum, previous)
        self._chained.clear()
        if self._stopping is not None:
            self._stopping.cancel()

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        # The change feed's waits and streams end on this flag (app.main, sse-starlette).
        AppStatus.should_exit = True
        if not self.draining:
            self.begin_draining(stop_signal=signum)
        elif signum == signal.SIGINT:
            # A second Ctrl-C: the server stops waiting (uvicorn's own rule). A second
            # SIGTERM changes nothing: uvicorn's supervisor sends one to every worker.
            self._pass_on(signum, frame)

    def begin_draining(self, stop_signal: int | None = None) -> None:
        """Safe in a signal handler: a flag, and the rest scheduled on the loop. With
        `stop_signal`, the signal is passed on to the server once drained."""
        if self.draining:
            return
        self.draining = True
        self._began_at = time.monotonic()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._drain, stop_signal)

    def _drain(self, stop_signal: int | None) -> None:
        assert self._loop is not None
        grace = self._graceful_timeout
        left = grace - (time.monotonic() - self._began_at)
        answer_before = min(ANSWER_BEFORE_SECONDS, grace / 2)
        self._loop.call_later(max(0.0, left - answer_before), self.answer_the_rest)
        if stop_signal is None:
            return
        watchdog = threading.Timer(max(0.0, left), _exit_now, args=(grace,))
        watchdog.daemon = True
        watchdog.start()
        self._stopping = self._loop.create_task(self._pass_on_when_drained(stop_signal))

    async def _pass_on_when_drained(self, signum: int) -> None:
        while self._in_flight:
            self._drained.clear()
            await self._drained.wait()
        if not self._passed_on:
            self._pass_on(signum, None)

    def _pass_on(self, signum: int, frame: FrameType | None) -> None:
        self._passed_on = True
        previous = self._chained.get(signum)
        if previous is not None:
            previous(signum, frame)

    def answer_the_rest(self) -> None:
        """The deadline: cancel the requests still running; `_serve` answers them."""
        if self._in_flight:
            logger.warning(
                "%d requests still running at the shutdown deadline: answered 503",
                len(self._in_flight),
            )
        for task, request in list(self._in_flight.items()):
            request.expired = True
            task.cancel()

    # Requests

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - servers run each request in a task
            await self.app(scope, receive, send)
            return
        request = _InFlight()
        self._in_flight[task] = request

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                request.answering = True
                if self.draining:
                    headers = [*message.get("headers", ()), _CONNECTION_CLOSE]
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, answer)
        except asyncio.CancelledError:
            if not self.draining:
                raise
            if not request.answering:
                await self._shutting_down(scope, receive, send)
            if not request.expired:
                raise  # the server's own cancellation: it goes on to the server
            task.uncancel()
        finally:
            del self._in_flight[task]
            if not self._in_flight:
                self._drained.set()

    async def _turn_away(self, scope: Scope, receive: Receive, send: Send) -> None:
        read = 0
        while read <= DISCARD_BODY_LIMIT:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client is gone
            read += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        await self._shutting_down(scope, receive, send)

    @staticmethod
    async def _shutting_down(scope: Scope, receive: Receive, send: Send) -> None:
        retry_after = retry_after_seconds(scope.get("app"))
        headers = {"Retry-After": str(retry_after), "Connection": "close"}
        response = error_response(503, "shutting_down", SHUTTING_DOWN_DETAIL, headers)
        await response(scope, receive, send)

    def _watching_lifespan(self, receive: Receive) -> Receive:
        async def watched() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.watch_signals(serving_settings().graceful_timeout_seconds)
            elif message["type"] == "lifespan.shutdown":
                self.unwatch_signals()
            return message

        return watched


def _exit_now(grace: float) -> None:
    """Past the graceful timeout (a watchdog thread: the loop may be the one stuck)."""
    logger.error(
        "still running %s s after the stop signal (GRACEFUL_TIMEOUT_SECONDS): exiting now", grace
    )
    os._exit(1)
