"""Open-loop latency: requests go out at a fixed rate whatever the server does, over a pool
of keep-alive HTTP/1.1 connections, and each latency runs from the request's SCHEDULED
send time, so a stall shows in the figures instead of silently slowing the client down
(no coordinated omission).

    python -m bench.openloop --url http://127.0.0.1:8000 --requests FILE --rate 500 \
        --duration 20 [--header 'Authorization: Bearer x'] [--answers FILE]

Prints one JSON line: sent, ok, errors, p50/p90/p99/p99.9/max in ms, client lag, CPU.
With --answers it also writes every answer (request index, scheduled time, the time its
last byte arrived, status, body) to FILE, for the feed's wake-up part (bench/feed.py).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import resource
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import orjson


def load_requests(path: Path, host: str, headers: list[str]) -> list[bytes]:
    """Raw HTTP/1.1 requests from a request file (see bench/workload.py for the format)."""
    extra = "".join(f"{h}\r\n" for h in headers)
    out = []
    with path.open("rb") as lines:
        for line in lines:
            method, target, signature, body = line.rstrip(b"\n").split(b"\t", 3)
            head = f"{method.decode()} {target.decode()} HTTP/1.1\r\nHost: {host}\r\n{extra}"
            if signature:
                head += f"videosdk-signature: {signature.decode()}\r\n"
            if body:
                head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            out.append(head.encode() + b"\r\n" + body)
    return out


class Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, float, bytes]] | None = None
        self.closed = False
        self.body = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def on_body(self, body: bytes) -> None:
        if len(self.body) < 300:
            self.body += body

    def on_message_complete(self) -> None:
        # The clock is read here, as soon as the last byte is parsed.
        done = time.perf_counter()
        status = self.parser.get_status_code()
        keep = self.parser.should_keep_alive()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, done, bytes(self.body)))
        self.body.clear()
        if not keep:
            self.closed = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionError("the server closed the connection"))

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    async def send(self, raw: bytes) -> tuple[int, float, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class OpenLoop:
    def __init__(
        self,
        host: str,
        port: int,
        requests: list[bytes],
        *,
        rate: float,
        duration: float,
        max_connections: int,
        preopen: int,
        timeout: float,
        keep_answers: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.requests = requests
        self.rate = rate
        self.count = max(1, int(rate * duration))
        self.max_connections = max_connections
        self.preopen = min(preopen, max_connections)
        self.timeout = timeout
        self.idle: asyncio.Queue[Connection] = asyncio.Queue()
        self.opened = 0
        self.latencies: list[float] = []
        self.pending: dict[int, float] = {}  # index -> scheduled time, until answered
        self.lags: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.failures: Counter[str] = Counter()
        self.first_bad = ""
        # (index, scheduled, answered, status, body) of each answer, when asked for
        self.answers: list[tuple[int, float, float, int, bytes]] | None = (
            [] if keep_answers else None
        )

    async def _open(self) -> Connection:
        self.opened += 1
        loop = asyncio.get_running_loop()
        _transport, connection = await loop.create_connection(Connection, self.host, self.port)
        return connection

    async def _connection(self) -> Connection:
        while not self.idle.empty():
            connection = self.idle.get_nowait()
            if not connection.closed:
                return connection
        if self.opened < self.max_connections:
            return await self._open()
        while True:
            connection = await self.idle.get()
            if not connection.closed:
                return connection

    async def _one(self, index: int, raw: bytes, scheduled: float) -> None:
        self.pending[index] = scheduled
        try:
            await self._exchange(index, raw, scheduled)
        finally:
            del self.pending[index]

    async def _exchange(self, index: int, raw: bytes, scheduled: float) -> None:
        connection: Connection | None = None
        try:
            connection = await self._connection()
            status, done, body = await asyncio.wait_for(connection.send(raw), self.timeout)
        except (TimeoutError, OSError, ConnectionError, httptools.HttpParserError) as exc:
            self.failures[type(exc).__name__] += 1
            if connection is not None:
                connection.closed = True
                connection.close()
            return
        self.statuses[status] += 1
        if self.answers is not None:
            self.answers.append((index, scheduled, done, status, body))
        if 200 <= status < 300:
            self.latencies.append(done - scheduled)
        elif not self.first_bad:
            self.first_bad = f"{status} {body.decode(errors='replace')}"
        if connection.closed:
            connection.close()
        else:
            self.idle.put_nowait(connection)

    async def run(self) -> dict[str, Any]:
        for connection in await asyncio.gather(*(self._open() for _ in range(self.preopen))):
            self.idle.put_nowait(connection)
        tasks: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        all_sent = loop.create_future()
        interval = 1.0 / self.rate
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter() + 0.05

        def dispatch(index: int, scheduled: float) -> None:
            # How late the client itself dispatches: should stay near 0, else it is overloaded.
            self.lags.append(time.perf_counter() - scheduled)
            raw = self.requests[index % len(self.requests)]
            task = loop.create_task(self._one(index, raw, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        def pace() -> None:
            # The event loop's timers tick in whole milliseconds, which would add up to 1 ms
            # of the client's own lateness to every latency; a thread sleeping with the
            # kernel's microsecond timer hands each request to the loop on time instead.
            for index in range(self.count):
                scheduled = start + index * interval
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                loop.call_soon_threadsafe(dispatch, index, scheduled)
            loop.call_soon_threadsafe(all_sent.set_result, None)

        pacer = threading.Thread(target=pace, name="open-loop pacer", daemon=True)
        pacer.start()
        await all_sent
        pacer.join()
        send_end = time.perf_counter()
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout + 5)
        end = time.perf_counter()
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        # Requests still unanswered count with what they have waited so far: lower bounds,
        # but leaving them out would hide exactly the stall the run is meant to show.
        waited = [end - scheduled for scheduled in self.pending.values()]
        while not self.idle.empty():
            self.idle.get_nowait().close()
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        ok = len(self.latencies)
        non_2xx = sum(n for status, n in self.statuses.items() if not 200 <= status < 300)
        errors = non_2xx + sum(self.failures.values())
        return {
            "rate_per_s": self.rate,
            "scheduled": self.count,
            "ok": ok,
            "errors": errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "failures": dict(self.failures),
            "unanswered": self.count - ok - errors,
            "first_bad": self.first_bad[:300],
            "send_window_s": round(send_end - start, 3),
            "achieved_per_s": round(ok / max(end - start, 1e-9), 1),
            "latency_ms": summarise(self.latencies + waited),
            "latency_is_lower_bound": bool(waited),
            "client_lag_ms": summarise(self.lags),
            "connections_opened": self.opened,
            "client_cpu_s": round(cpu, 3),
            "client_cores": round(cpu / max(end - start, 1e-9), 3),
        }


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarise(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    if not ordered:
        return {}
    ms = {f"p{q:g}": percentile(ordered, q) * 1000 for q in (50, 90, 99, 99.9)}
    ms["max"] = ordered[-1] * 1000
    ms["mean"] = sum(ordered) / len(ordered) * 1000
    return {k: round(v, 3) for k, v in ms.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="http://host:port")
    parser.add_argument("--requests", type=Path, required=True, help="request file")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds of sending")
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--connections", type=int, default=64, help="most connections open")
    parser.add_argument("--preopen", type=int, default=16, help="connections opened up front")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per response")
    parser.add_argument("--answers", type=Path, help="write every answer to this file (JSON)")
    args = parser.parse_args(argv)

    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    requests = load_requests(args.requests, f"{host}:{port}", args.header)
    if not requests:
        print("the request file is empty", file=sys.stderr)
        return 2
    client = OpenLoop(
        host,
        port,
        requests,
        rate=args.rate,
        duration=args.duration,
        max_connections=args.connections,
        preopen=args.preopen,
        timeout=args.timeout,
        keep_answers=args.answers is not None,
    )
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(client.run())
        result["event_loop"] = "asyncio"
    else:
        result = uvloop.run(client.run())
        result["event_loop"] = "uvloop"
    if client.answers is not None:
        args.answers.write_bytes(
            orjson.dumps(
                [
                    [index, scheduled, answered, status, body.decode(errors="replace")]
                    for index, scheduled, answered, status, body in client.answers
                ]
            )
        )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0 if result["errors"] == 0 and result["unanswered"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
