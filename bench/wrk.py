"""Closed-loop saturation with wrk and requests.lua: every non-2xx response is counted."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().with_name("requests.lua")
INSTALL_HINT = "apt-get update && apt-get install -y wrk"


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    path = wrk_path()
    if path is None:
        return "missing"
    done = subprocess.run([path, "-v"], capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).strip().splitlines()[0] if done.stdout or done.stderr else ""


@dataclass
class WrkRun:
    command: list[str]
    duration_s: float
    ok: int
    bad: int
    socket_errors: int
    wrapped: int
    corpus: int
    first_bad: str
    latency_ms: dict[str, float]
    loadgen_cpu_s: float
    raw: dict[str, Any]

    @property
    def rate(self) -> float:
        """2xx responses per second."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def errors(self) -> int:
        return self.bad + self.socket_errors


def run_wrk(
    base_url: str,
    requests_file: Path,
    *,
    duration_s: float,
    connections: int,
    threads: int,
    headers: list[str],
    timeout_s: float = 10.0,
) -> WrkRun:
    path = wrk_path()
    if path is None:
        raise RuntimeError(f"wrk is not installed: {INSTALL_HINT}")
    command = [
        path, "-t", str(threads), "-c", str(connections), "-d", f"{duration_s:g}s",
        "--timeout", f"{timeout_s:g}s", "-s", str(SCRIPT), base_url,
        "--", str(requests_file), str(threads), *headers,
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=duration_s + 120
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = next(
        (x for x in done.stdout.splitlines() if x.startswith("BENCH_RESULT ")),
        None,
    )
    if done.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed ({done.returncode}) after {time.monotonic() - started:.1f}s:\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    raw: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
    latency = raw["latency_us"]
    return WrkRun(
        command=command,
        duration_s=raw["duration_us"] / 1e6,
        ok=raw["ok"],
        bad=raw["bad"],
        socket_errors=raw["connect_errors"]
        + raw["read_errors"]
        + raw["write_errors"]
        + raw["timeouts"],
        wrapped=raw["wrapped"],
        corpus=raw["corpus"],
        first_bad=raw["first_bad"],
        latency_ms={k: round(float(v) / 1000, 3) for k, v in latency.items()},
        loadgen_cpu_s=cpu,
        raw=raw,
    )
