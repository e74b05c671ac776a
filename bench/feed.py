"""The change feed's consumers for the bench's wake-up part (issue 9): long-poll followers of
one session each and unfiltered Server-Sent Events streams, each stamping when a recording
reached it and at which version; and the match of those sightings to the webhooks' 2xx.

    python -m bench.feed --config FILE --out FILE

The config (JSON: url, token, sessions, streams, wait) says whom to follow. The process
prints `ready` once every stream is open and every long-poll is waiting, records until a
line arrives on its stdin, then writes what it saw to --out. Its clock is the sender's
(time.perf_counter is CLOCK_MONOTONIC: one clock for every process of the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import resource
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlencode, urlsplit

import httptools
import orjson

from bench.openloop import summarise
from bench.workload import Delivery

LAG_PROBE_SECONDS = 0.005
SETTLE_SECONDS = 0.3  # after the last first request went out, before saying `ready`
OPEN_TIMEOUT_SECONDS = 15.0

# A sighting: (arrival time, recording id, version).
Sighting = tuple[float, int, int]


class _Http(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection. A response or an event is stamped with the
    arrival of the bytes that completed it, read before they are parsed."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.arrived = 0.0
        self.failure: Exception | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.arrived = time.perf_counter()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.fail(exc or ConnectionError("the server closed the connection"))

    def fail(self, exc: Exception) -> None:
        self.failure = self.failure or exc

    def write(self, raw: bytes) -> None:
        assert self.transport is not None
        self.transport.write(raw)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


P = TypeVar("P", bound=_Http)


class _Exchange(_Http):
    """A long-poll connection: one request at a time, the whole body kept."""

    def __init__(self) -> None:
        super().__init__()
        self.body = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, float]] | None = None

    def on_message_begin(self) -> None:
        self.body.clear()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), bytes(self.body), self.arrived))

    def fail(self, exc: Exception) -> None:
        super().fail(exc)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def send(self, raw: bytes) -> asyncio.Future[tuple[int, bytes, float]]:
        """Write the request now; the future holds (status, body, arrival) of the answer."""
        self.waiter = asyncio.get_running_loop().create_future()
        self.write(raw)
        return self.waiter


class _Stream(_Http):
    """An SSE connection: each `event: recording` is a sighting of its `data:` document."""

    def __init__(self, seen: list[Sighting]) -> None:
        super().__init__()
        self.seen = seen
        self.opened: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.events = 0
        self.comments = 0
        self._partial = b""
        self._data: list[bytes] = []

    def on_headers_complete(self) -> None:
        if not self.opened.done():
            self.opened.set_result(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        *lines, self._partial = (self._partial + body).split(b"\n")
        for line in lines:
            line = line.rstrip(b"\r")  # sse-starlette ends lines with \r\n
            if not line:
                self._dispatch()
            elif line.startswith(b"data:"):
                self._data.append(line[5:].removeprefix(b" "))
            elif line.startswith(b":"):
                self.comments += 1

    def _dispatch(self) -> None:
        if not self._data:
            return
        document = orjson.loads(b"\n".join(self._data))
        self._data.clear()
        self.events += 1
        self.seen.append((self.arrived, int(document["id"]), int(document["version"])))

    def on_message_complete(self) -> None:
        if not self.closing:
            self.fail(ConnectionError("the server ended the stream"))

    def fail(self, exc: Exception) -> None:
        super().fail(exc)
        if not self.opened.done():
            self.opened.set_exception(exc)


@dataclass
class _Follower:
    """What one long-poll consumer did."""

    session: str
    seen: list[Sighting]
    requests: int = 0
    empty_answers: int = 0


class Consumers:
    def __init__(self, config: Mapping[str, Any]) -> None:
        url = urlsplit(str(config["url"]))
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        token = config["token"]
        self.head = f"Host: {self.host}:{self.port}\r\nAuthorization: Bearer {token}\r\n"
        self.sessions: list[str] = list(config["sessions"])
        self.stream_count = int(config["streams"])
        self.wait = float(config["wait"])
        self.followers = [_Follower(session, []) for session in self.sessions]
        self.stream_seen: list[list[Sighting]] = [[] for _ in range(self.stream_count)]
        self.errors: Counter[str] = Counter()
        self.first_error = ""
        self.lags: list[tuple[float, float]] = []  # (probe time, how late the loop ran it)

    def _get(self, target: str, accept: str = "application/json") -> bytes:
        return f"GET {target} HTTP/1.1\r\n{self.head}Accept: {accept}\r\n\r\n".encode()

    def _error(self, what: str) -> None:
        self.errors[what.split(":")[0]] += 1
        self.first_error = self.first_error or what

    async def _open(self, factory: Callable[[], P]) -> P:
        loop = asyncio.get_running_loop()
        _transport, connection = await loop.create_connection(factory, self.host, self.port)
        return connection

    async def _follow(self, follower: _Follower, cursor: str, sent: asyncio.Event) -> None:
        connection: _Exchange = await self._open(_Exchange)
        try:
            while True:
                query = urlencode({"sessionId": follower.session, "wait": f"{self.wait:g}",
                                   "cursor": cursor})  # fmt: skip
                answer = connection.send(self._get(f"/v1/changes?{query}"))
                follower.requests += 1
                sent.set()
                try:
                    status, body, arrived = await answer
                except (OSError, ConnectionError, httptools.HttpParserError) as exc:
                    self._error(f"long-poll {type(exc).__name__}: {exc}")
                    return
                if status != 200:
                    self._error(f"long-poll {status}: {body[:300].decode(errors='replace')}")
                    return
                page = orjson.loads(body)
                for item in page["items"]:
                    follower.seen.append((arrived, int(item["id"]), int(item["version"])))
                if not page["items"]:
                    follower.empty_answers += 1
                cursor = page["nextCursor"]
        finally:
            connection.close()

    def _probe(self, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        # How long a ready callback waits for the loop: what a response's bytes wait too.
        def ran(probed: float) -> None:
            self.lags.append((probed, time.perf_counter() - probed))

        while not stop.wait(LAG_PROBE_SECONDS):
            loop.call_soon_threadsafe(ran, time.perf_counter())

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        stop_probe = threading.Event()
        threading.Thread(target=self._probe, args=(loop, stop_probe), daemon=True).start()
        streams: list[_Stream] = []
        for seen in self.stream_seen:
            stream = await self._open(partial(_Stream, seen))
            stream.write(self._get("/v1/changes/stream?cursor=now", "text/event-stream"))
            streams.append(stream)
        async with asyncio.timeout(OPEN_TIMEOUT_SECONDS):
            statuses = await asyncio.gather(*(stream.opened for stream in streams))
        if any(status != 200 for status in statuses):
            raise RuntimeError(f"the streams answered {statuses}")
        # The long-polls' starting point: the feed's end, just before the sending starts.
        first: _Exchange = await self._open(_Exchange)
        status, body, _ = await first.send(self._get("/v1/changes?cursor=now&limit=1"))
        first.close()
        if status != 200:
            raise RuntimeError(f"GET /v1/changes?cursor=now: {status} {body[:300]!r}")
        cursor = str(orjson.loads(body)["nextCursor"])
        sent = [asyncio.Event() for _ in self.followers]
        tasks = [
            asyncio.create_task(self._follow(follower, cursor, flag))
            for follower, flag in zip(self.followers, sent, strict=True)
        ]
        async with asyncio.timeout(OPEN_TIMEOUT_SECONDS):
            await asyncio.gather(*(flag.wait() for flag in sent))
        await asyncio.sleep(SETTLE_SECONDS)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        ready_at = time.perf_counter()
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        stopped_at = time.perf_counter()
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        stop_probe.set()
        for task in tasks:
            if task.done() and task.exception() is not None:
                self._error(f"long-poll {type(task.exception()).__name__}: {task.exception()}")
            task.cancel()
        for stream in streams:
            if stream.failure is not None:
                self._error(f"stream {type(stream.failure).__name__}: {stream.failure}")
            stream.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        return {
            "start_cursor": cursor,
            "ready_at": ready_at,
            "stopped_at": stopped_at,
            "cpu_s": round(cpu, 3),
            "long_poll": [
                {
                    "session": f.session,
                    "seen": f.seen,
                    "requests": f.requests,
                    "empty_answers": f.empty_answers,
                }
                for f in self.followers
            ],
            "streams": [
                {"seen": seen, "events": stream.events, "comments": stream.comments}
                for seen, stream in zip(self.stream_seen, streams, strict=True)
            ],
            "lags": self.lags,
            "errors": dict(self.errors),
            "first_error": self.first_error,
        }


# -- choosing whom to follow, and matching sightings to deliveries ---------------------------


def session_of(delivery: Delivery) -> str:
    return str(orjson.loads(delivery.body)["data"]["sessionId"])


def pick_sessions(sessions: Sequence[str], count: int) -> list[str]:
    """The `count` sessions with the most deliveries in the slice (ties: the one whose
    deliveries span more of it), so each long-poll consumer has changes to wait for
    throughout the run."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    counts: Counter[str] = Counter()
    for index, session in enumerate(sessions):
        first.setdefault(session, index)
        last[session] = index
        counts[session] += 1
    ranked = sorted(counts, key=lambda s: (counts[s], last[s] - first[s]), reverse=True)
    return ranked[:count]


def answered_recordings(answers: Iterable[Sequence[Any]]) -> set[int]:
    """The recordings named by the 2xx answers."""
    out = set()
    for _index, _scheduled, _answered, status, body in answers:
        if 200 <= status < 300:
            recording = orjson.loads(body).get("recordingId")
            if recording is not None:
                out.add(int(recording))
    return out


@dataclass(slots=True)
class Applied:
    """A delivery answered `applied`: the recording it changed and the version it made."""

    index: int
    session: str
    recording: int
    event: int
    scheduled: float
    answered: float
    version: int = 0


def applied_deliveries(answers: Iterable[Sequence[Any]], sessions: Sequence[str]) -> list[Applied]:
    out = []
    for index, scheduled, answered, status, body in answers:
        if not 200 <= status < 300:
            continue
        document = orjson.loads(body)
        if document["status"] == "applied":
            out.append(
                Applied(index, sessions[index], int(document["recordingId"]),
                        int(document["eventId"]), scheduled, answered)
            )  # fmt: skip
    return out


def assign_versions(applied: Sequence[Applied], finals: Mapping[int, int]) -> dict[str, Any]:
    """Give each applied delivery the version it made its recording. A recording's k-th
    applied event of the run made version base + k, base being the version it had before
    the run: the track may have had events in an earlier part (the corpus is one stream),
    so base = the table's version after the run minus the run's applied events for it
    (nothing else writes meanwhile). The k-th in apply order: the log's id order, which
    per track is the order events were applied (ledger/group_writer.py holds the
    recording row before it appends the log rows). Answer order is the same unless two
    deliveries of one recording were in flight together: counted, as are the pairs whose
    answers came back in another order than they were applied."""
    by_recording: dict[int, list[Applied]] = defaultdict(list)
    for delivery in sorted(applied, key=lambda d: d.event):
        by_recording[delivery.recording].append(delivery)
    together = answered_out_of_order = sent_out_of_order = bad_base = continued = pairs = 0
    for recording, deliveries in by_recording.items():
        for before, after in itertools.pairwise(deliveries):
            pairs += 1
            together += after.scheduled < before.answered
            answered_out_of_order += after.answered < before.answered
            sent_out_of_order += after.index < before.index
        base = finals.get(recording, 0) - len(deliveries)
        if recording not in finals or base < 0:
            bad_base += 1
            base = max(base, 0)
        continued += base > 0
        for k, delivery in enumerate(deliveries, start=1):
            delivery.version = base + k
    return {
        "recordings": len(by_recording),
        "recordings_with_earlier_events": continued,
        "consecutive_pairs": pairs,
        "in_flight_together": together,
        "answered_out_of_apply_order": answered_out_of_order,
        "sent_out_of_apply_order": sent_out_of_order,
        "version_base_inconsistent": bad_base,
    }


class _Sightings:
    """One consumer's sightings, by recording: arrival times and the highest version held
    by then (a running maximum, so the first arrival holding a version is a bisection)."""

    def __init__(self, seen: Iterable[Sequence[float]]) -> None:
        self.times: dict[int, list[float]] = defaultdict(list)
        self.held: dict[int, list[int]] = defaultdict(list)
        for arrived, recording, version in sorted(tuple(s) for s in seen):
            held = self.held[int(recording)]
            held.append(max(int(version), held[-1] if held else 0))
            self.times[int(recording)].append(arrived)

    def first_holding(self, recording: int, version: int) -> float | None:
        held = self.held.get(recording)
        if not held:
            return None
        i = bisect.bisect_left(held, version)
        return self.times[recording][i] if i < len(held) else None

    def highest(self, recording: int) -> int:
        held = self.held.get(recording)
        return held[-1] if held else 0


def _latencies(
    kind: str, consumers: Sequence[tuple[str, _Sightings]], deliveries: Sequence[Applied],
    by_session: bool, start: float,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """Per (delivery, consumer) pair: the first arrival holding the delivery's version,
    minus the delivery's 2xx. Returns the summary, every latency with its pair, and the
    pairs never seen."""
    pairs: list[dict[str, Any]] = []
    missed: list[dict[str, Any]] = []
    for name, sightings in consumers:
        for d in deliveries:
            if by_session and d.session != name:
                continue
            arrived = sightings.first_holding(d.recording, d.version)
            pair: dict[str, Any] = {
                "consumer": f"{kind} {name}",
                "recording": d.recording,
                "version": d.version,
                "answered_at_s": round(d.answered - start, 4),
            }
            if arrived is None:
                pair["highest_version_seen"] = sightings.highest(d.recording)
                missed.append(pair)
            else:
                pair["latency_ms"] = round((arrived - d.answered) * 1000, 3)
                pairs.append(pair)
    seconds = [p["latency_ms"] / 1000 for p in pairs]
    summary: dict[str, Any] = {
        "consumers": len(consumers),
        "pairs": len(pairs) + len(missed),
        "observed": len(pairs),
        "unobserved": len(missed),
        "negative": sum(1 for s in seconds if s < 0),
        "latency_ms": summarise(seconds),
    }
    if seconds:
        summary["latency_ms"]["min"] = round(min(seconds) * 1000, 3)
    return summary, pairs, missed


def wakeups(
    sessions: Sequence[str],
    answers: Iterable[Sequence[Any]],
    seen: Mapping[str, Any],
    finals: Mapping[int, int],
) -> dict[str, Any]:
    """Match every applied delivery to each consumer that should see it: the long-poll
    consumers of its session and every stream."""
    applied = applied_deliveries(answers, sessions)
    order = assign_versions(applied, finals)
    start = min((d.scheduled for d in applied), default=0.0)
    followers = [(f["session"], _Sightings(f["seen"])) for f in seen["long_poll"]]
    streams = [(str(i + 1), _Sightings(s["seen"])) for i, s in enumerate(seen["streams"])]
    long_poll, lp_pairs, lp_missed = _latencies("long-poll", followers, applied, True, start)
    sse, sse_pairs, sse_missed = _latencies("stream", streams, applied, False, start)
    followed = {f["session"] for f in seen["long_poll"]}
    long_poll.update(
        deliveries=sum(1 for d in applied if d.session in followed),
        requests=sum(f["requests"] for f in seen["long_poll"]),
        empty_answers=sum(f["empty_answers"] for f in seen["long_poll"]),
        items=sum(len(f["seen"]) for f in seen["long_poll"]),
    )
    sse.update(
        deliveries=len(applied),
        events=sum(s["events"] for s in seen["streams"]),
        comments=sum(s["comments"] for s in seen["streams"]),
    )
    worst = sorted(lp_pairs + sse_pairs, key=lambda p: p["latency_ms"], reverse=True)[:5]
    missed = lp_missed + sse_missed
    return {
        "applied": len(applied),
        "apply_order": order,
        "long_poll": long_poll,
        "sse": sse,
        "unobserved": len(missed),
        "unobserved_examples": missed[:5],
        "worst": worst,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--config", type=Path, required=True, help="JSON: url, token, ...")
    parser.add_argument("--out", type=Path, required=True, help="where the sightings go (JSON)")
    args = parser.parse_args(argv)
    consumers = Consumers(orjson.loads(args.config.read_bytes()))
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(consumers.run())
        result["event_loop"] = "asyncio"
    else:
        result = uvloop.run(consumers.run())
        result["event_loop"] = "uvloop"
    args.out.write_bytes(orjson.dumps(result))
    return 0 if not result["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
