"""A real trackhook server process for the tests where a process matters
(workers, crashes, signals, outages, the HTTP protocol)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """`trackhook serve --no-migrate` (the product's own entry point: its protocol, its
    headers, its worker supervisor) with the given environment and worker count."""

    env: Mapping[str, str]
    workers: int = 1
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    graceful_timeout: int = 30
    log_level: str = "warning"  # `--log-level`, the server's (LOG_LEVEL in `env` is the app's)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True, timeout: float = 30.0) -> ServerProcess:
        command = [
            sys.executable, "-m", "app.cli", "serve", "--no-migrate",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers),
            "--graceful-timeout", str(self.graceful_timeout),
            "--log-level", self.log_level,
        ]  # fmt: skip
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so a SIGKILL to the group takes the workers too
        )
        if wait_ready:
            self.wait_until("/healthz", timeout)
        return self

    def wait_until(self, path: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                if httpx.get(self.base_url + path, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.base_url}{path} not ready after {timeout}s")

    def signal_group(self, signum: signal.Signals) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            self.signal_group(signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self, timeout: float = 40.0) -> int:
        """SIGTERM and wait for a graceful exit; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.terminate(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()
