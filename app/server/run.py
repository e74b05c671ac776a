"""uvicorn as trackhook runs it: `trackhook serve` and the tests' server processes.

Beyond `uvicorn app.main:app`: the protocol with a read bound and JSON errors, no `server`
header and `X-Content-Type-Options: nosniff` on every answer (uvicorn's own included), and
with `--workers` a supervisor that lets go of the listening socket as soon as it is told
to stop; and the service's logging (app.core.logs) for every line, uvicorn's included, in
every process.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from types import FrameType

import uvicorn
from prometheus_client.multiprocess import mark_process_dead
from uvicorn.config import LOG_LEVELS, STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess

from app.core.config import Settings
from app.core.logs import level_number, logging_config
from app.server.protocol import TrackhookProtocol
from app.server.settings import GRACEFUL_TIMEOUT_ENV, serving_settings

APP = "app.main:app"
# Sent with every answer, by the server itself: the app's, the intake lane's, the error
# handlers', and the server's own (malformed requests, timeouts).
SECURITY_HEADERS = [("x-content-type-options", "nosniff")]


def serve(
    *, host: str, port: int, workers: int, graceful_timeout: int, log_level: str = "info"
) -> None:
    # The app reads the graceful timeout from here (each worker inherits it): its own
    # deadline comes just before the server's.
    os.environ[GRACEFUL_TIMEOUT_ENV] = str(graceful_timeout)
    serving_settings.cache_clear()
    settings = Settings()
    # LOG_LEVEL governs uvicorn's loggers too; `--log-level` can only make them quieter.
    server_level = max(LOG_LEVELS[log_level.lower()], level_number(settings.log_level))
    config = uvicorn.Config(
        APP,
        host=host,
        port=port,
        workers=workers,
        http=TrackhookProtocol,
        proxy_headers=True,
        server_header=False,
        headers=SECURITY_HEADERS,
        timeout_keep_alive=serving_settings().keep_alive_timeout_seconds,
        timeout_graceful_shutdown=graceful_timeout,
        log_level=server_level,
        log_config=logging_config(
            settings.log_level,
            settings.log_format,
            server_level=server_level,
            access_log=settings.access_log,
        ),
        access_log=settings.access_log,
    )
    if workers > 1:
        Supervisor(config, sockets=[config.bind_socket()]).run()
        return
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, except that a stop signal takes effect at once.

    uvicorn's parent keeps its copy of the listening socket until every worker has exited,
    so while the workers drain, the kernel still accepts connections that nobody will ever
    serve: they hang until the parent exits. And it passes SIGTERM on to the workers only
    at its next half-second tick, serving normally meanwhile. Here the parent closes its
    copy and signals the workers in the signal handler itself; the workers answer 503 until
    their own listeners close, and after that a new connection is refused."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self._stopping = False
        self._workers: set[int] = set()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_stop_signal)

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signal_queue.append(signum)  # uvicorn's loop then stops and joins as usual
        if self._stopping:
            return
        self._stopping = True
        # At once, not at the next tick: the signal may come while the loop waits on a
        # worker's health check, after which uvicorn would replace a worker it found hung
        # unless it already knows it is exiting (the sockets are closed below).
        self.should_exit.set()
        for sock in self.sockets:
            sock.close()
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signal.SIGTERM)

    def keep_subprocess_alive(self) -> None:
        if self._stopping:  # a worker that has drained and exited is not replaced
            return
        try:
            super().keep_subprocess_alive()
        except ValueError:
            # The stop signal closed the sockets between uvicorn's last look at
            # should_exit and its start of a replacement (fork_exec: bad fds_to_keep).
            if not self._stopping:
                raise
        self._forget_gone_workers()

    def _forget_gone_workers(self) -> None:
        """A worker that is gone (it died, or was replaced) has its metrics' live gauges
        dropped (app.server.metrics_dir); its counts stay in the sums."""
        workers = {process.pid for process in self.processes if process.pid is not None}
        for pid in self._workers - workers:
            mark_process_dead(pid)  # type: ignore[no-untyped-call]
        self._workers = workers
