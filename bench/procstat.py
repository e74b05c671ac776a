"""CPU time and TCP connections per process, read from /proc (Linux), to see where the
cores went during a run and how the connections spread over the server processes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one live process (0 if it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _all_pids() -> list[int]:
    return [int(entry.name) for entry in _PROC.iterdir() if entry.name.isdigit()]


def descendants(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(pid)
    found = [root]
    queue = [root]
    while queue:
        for child in children.get(queue.pop(), ()):
            found.append(child)
            queue.append(child)
    return found


def processes_named(name: str) -> list[int]:
    pids = []
    for pid in _all_pids():
        try:
            if (_PROC / str(pid) / "comm").read_text().strip() == name:
                pids.append(pid)
        except OSError:
            continue
    return pids


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    first = (_PROC / "stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in first]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user/nice
    return total - idle, total


def established_connections(port: int, pids: Iterable[int]) -> dict[int, int]:
    """Established TCP connections whose local port is `port`, counted per owning pid."""
    inodes: set[str] = set()
    suffix = f":{port:04X}"
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[1].endswith(suffix) and parts[3] == "01":
                inodes.add(parts[9])
    counts: dict[int, int] = {}
    for pid in pids:
        n = 0
        try:
            for fd in (_PROC / str(pid) / "fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    n += 1
        except OSError:
            pass
        counts[pid] = n
    return counts


@dataclass
class Window:
    """CPU used between `start()` and `stop()` by the server processes, PostgreSQL and the
    whole machine; connections per server process sampled while it runs."""

    server_roots: list[int]
    port: int
    interval: float = 0.5
    wall_s: float = 0.0
    server_cpu_s: dict[int, float] = field(default_factory=dict)
    postgres_cpu_s: float = 0.0
    machine_busy_cores: float = 0.0
    connections: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _pids: list[int] = field(default_factory=list)
    _before: dict[int, float] = field(default_factory=dict)
    _pg_before: dict[int, float] = field(default_factory=dict)
    _machine_before: tuple[int, int] = (0, 0)
    _t0: float = 0.0

    def _server_pids(self) -> list[int]:
        return [pid for root in self.server_roots for pid in descendants(root)]

    def start(self) -> Window:
        self._pids = self._server_pids()
        self._before = {pid: cpu_seconds(pid) for pid in self._pids}
        self._pg_before = {pid: cpu_seconds(pid) for pid in processes_named("postgres")}
        self._machine_before = machine_jiffies()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            for pid, n in established_connections(self.port, self._pids).items():
                self.connections[pid] = max(self.connections.get(pid, 0), n)

    def stop(self) -> Window:
        self.wall_s = time.perf_counter() - self._t0
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.server_cpu_s = {pid: cpu_seconds(pid) - self._before[pid] for pid in self._pids}
        # Backends that ended during the window lose their time: a lower bound.
        pg_after = {pid: cpu_seconds(pid) for pid in processes_named("postgres")}
        self.postgres_cpu_s = sum(pg_after[pid] - self._pg_before.get(pid, 0.0) for pid in pg_after)
        busy_before, total_before = self._machine_before
        busy, total = machine_jiffies()
        cores = os.cpu_count() or 1
        self.machine_busy_cores = (busy - busy_before) / max(1, total - total_before) * cores
        return self

    def summary(self, loadgen_cpu_s: float) -> dict[str, object]:
        wall = max(self.wall_s, 1e-9)
        server = sum(self.server_cpu_s.values())
        ours = server + self.postgres_cpu_s + loadgen_cpu_s
        return {
            "wall_s": round(self.wall_s, 3),
            "server_cores": round(server / wall, 3),
            "postgres_cores_all_databases": round(self.postgres_cpu_s / wall, 3),
            "loadgen_cores": round(loadgen_cpu_s / wall, 3),
            "machine_busy_cores": round(self.machine_busy_cores, 3),
            "other_processes_cores": round(max(0.0, self.machine_busy_cores - ours / wall), 3),
            "per_process": [
                {
                    "pid": pid,
                    "cpu_s": round(self.server_cpu_s[pid], 3),
                    "connections_max": self.connections.get(pid, 0),
                }
                for pid in self._pids
            ],
        }
