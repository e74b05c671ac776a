"""The servers under test: the service or the bare app, as `uvicorn --workers N` or as N
uvicorn processes on one SO_REUSEPORT port, always with the same uvicorn settings."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# The tests' server helper starts real server processes too; one free_port for both.
from tests.support.server import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]
APPS = {"intake": "app.main:app", "bare": "bench.bare_app:app"}
MODES = ("workers", "reuseport")
KEEP_ALIVE_SECONDS = 60  # longer than any pause in a run, so no idle connection is cut
BACKLOG = 2048


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def uvicorn_settings() -> dict[str, str | int | bool]:
    """One set of settings for every server of a run, so the ratios compare like with like."""
    return {
        "loop": "uvloop" if _have("uvloop") else "asyncio",
        "http": "httptools" if _have("httptools") else "h11",
        "log_level": "warning",
        "access_log": False,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "backlog": BACKLOG,
    }


@dataclass
class Server:
    target: str  # "intake" or "bare"
    mode: str  # "workers" or "reuseport"
    workers: int
    env: Mapping[str, str]
    log_dir: Path
    port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.target}-{self.mode}-{self.workers}-{self.port}.log"

    def _command(self, ready_file: Path | None) -> list[str]:
        s = uvicorn_settings()
        if ready_file is None:
            return [
                sys.executable, "-m", "uvicorn", APPS[self.target],
                "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", str(self.workers),
                "--loop", str(s["loop"]), "--http", str(s["http"]),
                "--log-level", str(s["log_level"]), "--no-access-log",
                "--timeout-keep-alive", str(s["timeout_keep_alive"]),
                "--backlog", str(s["backlog"]),
            ]  # fmt: skip
        return [
            sys.executable, "-m", "bench.reuseport", APPS[self.target],
            "--host", "127.0.0.1", "--port", str(self.port),
            "--loop", str(s["loop"]), "--http", str(s["http"]),
            "--timeout-keep-alive", str(s["timeout_keep_alive"]),
            "--backlog", str(s["backlog"]),
            "--ready-file", str(ready_file),
        ]  # fmt: skip

    def start(self, timeout: float = 60.0) -> Server:
        env = {**os.environ, **self.env}
        log = self.log_path.open("ab")
        ready_files: list[Path] = []
        try:
            if self.mode == "workers":
                launches: list[Path | None] = [None]
            else:
                ready_dir = Path(tempfile.mkdtemp(prefix="ready-", dir=self.log_dir))
                ready_files = [ready_dir / f"{i}" for i in range(self.workers)]
                launches = list(ready_files)
            for ready in launches:
                command = self._command(ready)
                self.commands.append(command)
                self.processes.append(
                    subprocess.Popen(
                        command,
                        cwd=PROJECT_ROOT,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # a signal to the group reaches the workers
                    )
                )
        finally:
            log.close()
        self._wait_ready(ready_files, timeout)
        return self

    def _wait_ready(self, ready_files: list[Path], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{self.target} server exited with {process.returncode}; "
                        f"log: {self.log_path}\n{self.log_tail()}"
                    )
            if all(path.exists() for path in ready_files):
                try:
                    if httpx.get(self.base_url + "/healthz", timeout=1.0).status_code == 200:
                        if self.mode == "workers" and self.workers > 1:
                            self._wait_workers(deadline)
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.target} server not ready after {timeout}s; log: {self.log_path}")

    def _wait_workers(self, deadline: float) -> None:
        """uvicorn's supervisor answers once one worker is up; wait for all N to exist."""
        from bench.procstat import descendants

        while time.monotonic() < deadline:
            if len(descendants(self.processes[0].pid)) >= self.workers + 1:
                time.sleep(1.0)  # their lifespans run in parallel; give the last one time
                return
            time.sleep(0.1)

    def roots(self) -> list[int]:
        return [process.pid for process in self.processes]

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(timeout=10)
        self.processes.clear()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
