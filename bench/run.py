"""`python -m bench`: the whole benchmark in one command (see docs/PERFORMANCE.md).

1. saturation: wrk against the service and against a bare FastAPI app with the same
   uvicorn settings, for each process count, as `uvicorn --workers N` and as N processes
   on one SO_REUSEPORT port, and for each delivery order (tracks spread out, or each
   track's deliveries in one burst); the headline is the ratio intake/bare;
2. open-loop latency of the intake at fixed rates (and of bursts at one), and of the
   query API at a fixed rate;
3. the change feed's wake-up latency: open-loop intake while long-poll consumers and
   SSE streams follow the feed, from each webhook's 2xx to each consumer's sighting;
4. the same queries, the change feed's pages, and intake saturation once 1M recordings
   and 10M events are loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from app.ledger.feed import SCAN_BUDGET
from bench import report
from bench.arrivals import arrivals, last_event_id
from bench.database import DEFAULT_SERVER, BenchDatabase, durability_problems, plain_dsn, redact
from bench.feed import answered_recordings, pick_sessions, session_of, wakeups
from bench.horizon import HELD_BACK_MS, HorizonWatch, wait_for_horizon
from bench.loader import SchemaChanged, load
from bench.openloop import summarise
from bench.procstat import Window, cpu_seconds
from bench.servers import MODES, PROJECT_ROOT, Server, uvicorn_settings
from bench.workload import (
    ORDERS,
    Corpus,
    Delivery,
    deal_bursts,
    write_get_file,
    write_post_file,
)
from bench.wrk import INSTALL_HINT, WrkRun, run_wrk, wrk_path, wrk_version

EXIT_FAILED_RUN = 1
EXIT_MISSING_TOOL = 2
EXIT_UNSAFE_DATABASE = 3
QUICK = {
    "workers": "1,2",
    "duration": 5.0,
    "warmup": 2.0,
    "openloop_duration": 5.0,
    "rows": 10_000,
    "events": 100_000,
}
DEFAULTS = {
    "workers": "1,2,4",
    "duration": 20.0,
    "warmup": 5.0,
    "openloop_duration": 20.0,
    "rows": 1_000_000,
    "events": 10_000_000,
}
BARE_CORPUS = 20_000
FIRST_GUESS_PER_S = 2_000.0  # intake rate assumed before any has been measured
# The change feed's wake-up part (issue 9): who follows the feed while webhooks come in.
FEED_LONG_POLLS = 50  # each follows one session with wait=FEED_WAIT_S
FEED_STREAMS = 10  # unfiltered SSE streams
FEED_WAIT_S = 30.0
FEED_GRACE_S = 5.0  # once every change is readable, before one still unseen counts as missed
FEED_SETTLE_LIMIT_S = 60.0  # how long to wait for another transaction to let the feed move
FEED_PAGE = 100  # the page size of the loaded part's feed reads
NO_SUCH_SESSION = "bench-no-such-session"  # a filter nothing matches: a page only moves on


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument("--workers", help="process counts to measure, e.g. 1,2,4 (default 1,2,4)")
    p.add_argument(
        "--modes",
        default="workers,reuseport",
        help="how N processes serve: 'workers' (uvicorn --workers N) and/or 'reuseport' "
        "(N uvicorn processes, one SO_REUSEPORT socket each); default both",
    )
    p.add_argument("--duration", type=float, help="seconds measured per saturation run (20)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up before each (5)")
    p.add_argument(
        "--order",
        default=",".join(ORDERS),
        help="delivery orders for the intake saturation runs: 'spread' (tracks interleaved) "
        "and/or 'bursts' (each track's deliveries back to back); default both",
    )
    p.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument("--rates", default="200,500,1000", help="open-loop intake rates, webhooks/s")
    p.add_argument("--read-rate", type=float, default=300.0, help="open-loop query rate, req/s")
    p.add_argument(
        "--feed-rates",
        default="200,500",
        help="intake rates of the change feed's wake-up part, webhooks/s; '' skips the part",
    )
    p.add_argument("--openloop-duration", type=float, help="seconds per open-loop rate (20)")
    p.add_argument(
        "--latency-workers",
        type=int,
        default=2,
        help="processes (uvicorn --workers) for the open-loop and loaded parts (2)",
    )
    p.add_argument("--rows", type=int, help="recordings to load (1,000,000)")
    p.add_argument("--events", type=int, help="webhook events to load (10,000,000)")
    p.add_argument("--skip-loaded", action="store_true", help="skip the loaded-database part")
    p.add_argument("--quick", action="store_true", help="a short sanity run of every part")
    p.add_argument(
        "--database-url",
        help="use this database (it is migrated, and keeps what the bench writes); "
        f"default: a new trackhook_bench_<random> on {DEFAULT_SERVER}, dropped at the end",
    )
    p.add_argument("--keep-database", action="store_true", help="do not drop the bench database")
    p.add_argument(
        "--allow-unsafe-db",
        action="store_true",
        help="run even if fsync or synchronous_commit is off (figures marked not durable)",
    )
    p.add_argument("--seed", type=int, default=1, help="workload seed (1)")
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="sign a fresh corpus instead of reusing bench/results/.cache",
    )
    p.add_argument("--out", type=Path, help="JSON file (bench/results/<timestamp>.json)")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.worker_counts = [int(x) for x in str(args.workers).split(",") if x.strip()]
    args.mode_list = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(args.mode_list) - set(MODES)
    if unknown:
        p.error(f"unknown mode(s) {sorted(unknown)}; choose from {MODES}")
    args.rate_list = [float(x) for x in args.rates.split(",") if x.strip()]
    args.feed_rate_list = [float(x) for x in args.feed_rates.split(",") if x.strip()]
    args.order_list = [o.strip() for o in args.order.split(",") if o.strip()]
    unknown = set(args.order_list) - set(ORDERS)
    if unknown or not args.order_list:
        p.error(f"unknown order(s) {sorted(unknown)}; choose from {ORDERS}")
    return args


def quiesce(server: Server, limit_s: float = 30.0) -> None:
    """Wait until the server has worked off what a run left queued (an overloaded
    open-loop run leaves requests behind), so the next run starts on an idle server."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        window = Window(server.roots(), server.port).start()
        time.sleep(0.5)
        window.stop()
        if sum(window.server_cpu_s.values()) / window.wall_s < 0.1:
            return


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.token = secrets.token_urlsafe(16)
        self.workdir = Path(tempfile.mkdtemp(prefix="trackhook-bench-"))
        self.failures: list[str] = []
        self.warnings: list[str] = []
        self.commands: list[list[str]] = []
        self.results: dict[str, Any] = {}
        self.database: BenchDatabase | None = None
        self.corpus: Corpus | None = None  # spread: the open-loop, loaded and bare parts
        self.corpora: dict[str, Corpus] = {}  # by order; all signed with one key
        self.last_intake_rate = dict.fromkeys(ORDERS, FIRST_GUESS_PER_S)
        self._files = 0

    # -- helpers ---------------------------------------------------------------------

    def _file(self, stem: str) -> Path:
        self._files += 1
        return self.workdir / f"{self._files:03d}-{stem}.tsv"

    def _write_intake(self, path: Path, order: str, count: int, threads: int = 1) -> None:
        """The next `count` deliveries of that order, for a client with `threads` threads
        (wrk's). Each burst goes whole to one wrk thread (workload.deal_bursts), whose
        connections then send it together; the open-loop client sends the file in order."""
        deliveries: list[Delivery] = self.corpora[order].take(count)
        if order == "bursts":
            deliveries = deal_bursts(deliveries, threads)
        write_post_file(path, deliveries)

    def _intake_env(self) -> dict[str, str]:
        assert self.database is not None and self.corpus is not None
        return {
            "DATABASE_URL": "postgresql+asyncpg://"
            + plain_dsn(self.database.dsn).removeprefix("postgresql://"),
            "VIDEOSDK_PUBLIC_KEY": self.corpus.public_pem,  # wins over a key file or URL
            "WEBHOOK_SIGNATURE": "required",
            "API_TOKENS": self.token,
            "LOG_LEVEL": "WARNING",
        }

    def _server(self, target: str, mode: str, workers: int) -> Server:
        env = self._intake_env() if target == "intake" else {}
        log(f"starting {target} ({mode}, {workers} process{'es' if workers > 1 else ''})")
        return Server(target, mode, workers, env, self.workdir)  # started by `with`

    def _fail(self, what: str) -> None:
        self.failures.append(what)
        log(f"FAILED: {what}")

    # -- saturation ------------------------------------------------------------------

    def _wrk(self, server: Server, requests_file: Path, duration: float) -> WrkRun:
        return run_wrk(
            server.base_url,
            requests_file,
            duration_s=duration,
            connections=self.args.connections,
            threads=self.args.threads,
            headers=[],
        )

    def saturation(
        self, target: str, mode: str, workers: int, order: str = "spread"
    ) -> dict[str, Any]:
        assert self.corpus is not None and self.database is not None
        args = self.args
        name = f"{target} {mode} x{workers}" + (f" {order}" if target == "intake" else "")
        first_id = 0
        with self._server(target, mode, workers) as server:
            if target == "bare":
                warm_file = measure_file = self._file("bare")
                write_post_file(measure_file, self.corpus.head(BARE_CORPUS))
            else:
                warm_file = self._file(f"intake-{order}-warmup")
                guess = self.last_intake_rate[order]
                self._write_intake(warm_file, order, int(guess * args.warmup) + 500, args.threads)
            warm = self._wrk(server, warm_file, args.warmup)
            if warm.errors:
                self._fail(f"{name} warm-up: {warm.errors} errors, "
                           f"first: {warm.first_bad}")  # fmt: skip
            if target == "intake":
                # Enough fresh deliveries that the measured run need not wrap (50% margin).
                rate = max(warm.rate, self.last_intake_rate[order] * 0.5, 100.0)
                measure_file = self._file(f"intake-{order}")
                size = int(rate * args.duration * 1.5) + 1000
                self._write_intake(measure_file, order, size, args.threads)
                first_id = asyncio.run(last_event_id(self.database.dsn))
            window = Window(server.roots(), server.port).start()
            run = self._wrk(server, measure_file, args.duration)
            window.stop()
        self.commands.extend(server.commands)
        self.commands.append(run.command)
        if target == "intake":
            self.last_intake_rate[order] = run.rate
        record: dict[str, Any] = {
            "target": target,
            "mode": mode,
            "workers": workers,
            "order": order if target == "intake" else None,
            "rate_per_s": round(run.rate, 1),
            "unit": "webhooks/s (2xx)" if target == "intake" else "requests/s (2xx)",
            "ok": run.ok,
            "errors": run.errors,
            "non_2xx": run.bad,
            "socket_errors": run.socket_errors,
            "first_bad": run.first_bad,
            "duration_s": round(run.duration_s, 3),
            "warmup_rate_per_s": round(warm.rate, 1),
            "corpus": run.corpus,
            "corpus_wrapped": run.wrapped > 0 and target == "intake",
            "latency_closed_loop_ms": run.latency_ms,
            "cpu": window.summary(run.loadgen_cpu_s),
            "server_commands": server.commands,
            "wrk_command": run.command,
        }
        if run.errors:
            self._fail(f"{name}: {run.errors} errors, first: {run.first_bad}")
        if record["corpus_wrapped"]:
            self.warnings.append(
                f"{name}: wrk went round its {run.corpus:,} deliveries, so "
                "part of the run replayed them (more duplicates/restarts than designed)"
            )
        log(
            f"  {name}: {run.rate:,.0f} /s, {run.errors} errors, "
            f"server {record['cpu']['server_cores']} cores, wrk {record['cpu']['loadgen_cores']} "
            f"cores, others {record['cpu']['other_processes_cores']} cores"
        )
        if target == "intake":
            record["arrivals"] = self._arrivals(name, first_id)
        return record

    def _arrivals(self, name: str, first_id: int) -> dict[str, Any] | None:
        """How close each track's deliveries came in that run, and how many shared a
        commit with another of their track (bench/arrivals.py). Outside the measured time."""
        assert self.database is not None
        try:
            found = asyncio.run(arrivals(self.database.dsn, first_id))
        except Exception as exc:  # a figure for information; the log's schema may change
            self.warnings.append(f"{name}: arrivals not measured: {type(exc).__name__}: {exc}")
            return None
        span = found["first_to_last_ms"]
        log(
            f"    a track's deliveries arrived within p50 {span.get('p50')} ms, p90 "
            f"{span.get('p90')} ms; {found['committed_with_own_track_share']} of them "
            "committed with another of their track"
        )
        return found

    def saturation_phase(self) -> None:
        runs: list[dict[str, Any]] = []
        ratios: list[dict[str, Any]] = []
        for workers in self.args.worker_counts:
            modes = self.args.mode_list if workers > 1 else self.args.mode_list[:1]
            for mode in modes:
                # Bare and intake (each order) back to back, so the ratios see the same machine.
                bare = self.saturation("bare", mode, workers)
                runs.append(bare)
                rows: dict[str, dict[str, Any]] = {}
                for order in self.args.order_list:
                    intake = self.saturation("intake", mode, workers, order)
                    runs.append(intake)
                    rate, bare_rate = intake["rate_per_s"], bare["rate_per_s"]
                    rows[order] = {
                        "workers": workers,
                        "mode": mode,
                        "order": order,
                        "intake_per_s": rate,
                        "bare_per_s": bare_rate,
                        "ratio": round(rate / bare_rate, 4) if bare_rate else None,
                    }
                if "bursts" in rows and rows.get("spread", {}).get("intake_per_s"):
                    rows["bursts"]["vs_spread"] = round(
                        rows["bursts"]["intake_per_s"] / rows["spread"]["intake_per_s"], 4
                    )
                ratios.extend(rows.values())
        self.results["saturation"] = runs
        self.results["ratios"] = ratios

    # -- open loop -------------------------------------------------------------------

    def openloop(
        self,
        server: Server,
        requests_file: Path,
        rate: float,
        duration: float,
        what: str,
        extra: Sequence[str] = (),
        companions: Sequence[int] = (),
    ) -> dict[str, Any]:
        """One open-loop client run. `companions` are other client processes running
        meanwhile (the feed's consumers): their CPU counts as the load generator's too."""
        command = [
            sys.executable, "-m", "bench.openloop", "--url", server.base_url,
            "--requests", str(requests_file), "--rate", f"{rate:g}",
            "--duration", f"{duration:g}", "--header", f"Authorization: Bearer {self.token}",
            *extra,
        ]  # fmt: skip
        companions_before = {pid: cpu_seconds(pid) for pid in companions}
        window = Window(server.roots(), server.port).start()
        done = subprocess.run(
            command,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=duration + 120,
        )
        window.stop()
        companions_cpu = sum(cpu_seconds(pid) - cpu for pid, cpu in companions_before.items())
        quiesce(server)
        lines = done.stdout.strip().splitlines()
        if not lines:
            raise RuntimeError(
                f"open-loop client failed ({done.returncode}): {done.stderr[-2000:]}"
            )
        result: dict[str, Any] = orjson.loads(lines[-1])
        shown = [c if not c.startswith("Authorization:") else "Authorization: Bearer ***"
                 for c in command]  # fmt: skip
        self.commands.append(shown)
        result["what"] = what
        result["command"] = shown
        result["cpu"] = window.summary(result["client_cpu_s"] + companions_cpu)
        if companions:
            result["companions_cpu_s"] = round(companions_cpu, 3)
            result["companions_cores"] = round(companions_cpu / max(window.wall_s, 1e-9), 3)
        if result["unanswered"]:
            self.warnings.append(
                f"open-loop {what} at {rate:g}/s: {result['unanswered']} requests were still "
                "unanswered when the client stopped waiting: the server cannot keep up with "
                "this rate, and the latencies shown are lower bounds"
            )
        if result["errors"]:
            self._fail(
                f"open-loop {what} at {rate:g}/s: {result['errors']} errors "
                f"{result['statuses']} {result['failures']}, first: {result['first_bad']}"
            )
        lat = result.get("latency_ms", {})
        log(f"  {what} at {rate:g}/s: p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms, "
            f"max {lat.get('max')} ms, {result['errors']} errors, "
            f"{result['unanswered']} unanswered")  # fmt: skip
        return result

    def intake_openloop(self, server: Server) -> list[dict[str, Any]]:
        assert self.corpus is not None
        args = self.args
        warm = self._file("openloop-warmup")
        write_post_file(warm, self.corpus.take(int(min(args.rate_list) * 2)))
        self.openloop(server, warm, min(args.rate_list), 2, "warm-up")
        runs = []
        for rate in args.rate_list:
            path = self._file(f"openloop-{rate:g}")
            write_post_file(path, self.corpus.take(int(rate * args.openloop_duration)))
            runs.append(self.openloop(server, path, rate, args.openloop_duration, "intake"))
            runs[-1]["order"] = "spread"
        if "bursts" in args.order_list:
            # One rate of bursts: in file order, so a track's deliveries go out one send
            # interval apart (2 ms at 500/s), each on whichever connection is free.
            rate = 500.0 if 500.0 in args.rate_list else max(args.rate_list)
            path = self._file(f"openloop-bursts-{rate:g}")
            self._write_intake(path, "bursts", int(rate * args.openloop_duration))
            run = self.openloop(server, path, rate, args.openloop_duration, "intake bursts")
            run["order"] = "bursts"
            runs.append(run)
        return runs

    def reads(self, server: Server, ids: list[int], sessions: list[str]) -> list[dict[str, Any]]:
        if not ids:
            self.warnings.append("no recordings to query: the read runs were skipped")
            return []
        queries = {
            "get_by_id": [f"/v1/recordings/{i}" for i in ids],
            "list_by_session": [f"/v1/recordings?sessionId={s}&limit=50" for s in sessions],
            "list_stopped": ["/v1/recordings?status=stopped&limit=50"],
        }
        return self._read_runs(server, queries, "reads-warmup", 200)

    def _read_runs(
        self, server: Server, queries: dict[str, list[str]], warm_name: str, warm_each: int
    ) -> list[dict[str, Any]]:
        """A short warm-up over the first `warm_each` paths of every query, then each query
        at the read rate, open loop; one run per query, in the order given."""
        args = self.args
        warm = self._file(warm_name)
        write_get_file(warm, [p for paths in queries.values() for p in paths[:warm_each]])
        self.openloop(server, warm, args.read_rate, 2, "warm-up")
        runs = []
        for query, paths in queries.items():
            path = self._file(query)
            write_get_file(path, paths)
            run = self.openloop(server, path, args.read_rate, args.openloop_duration, query)
            run["query"] = query
            run["example"] = paths[0]
            runs.append(run)
        return runs

    def changes_reads(
        self, server: Server, sessions: list[str], recordings: int
    ) -> list[dict[str, Any]]:
        """`GET /v1/changes` pages on the loaded database: from the beginning, from the
        middle of the feed, from `now`, and filtered by session from the beginning."""
        if not sessions:
            return []
        middle = self._middle_cursor(server, recordings)
        queries = {
            "changes_from_beginning": [f"/v1/changes?limit={FEED_PAGE}"],
            "changes_from_middle": [f"/v1/changes?limit={FEED_PAGE}&cursor={middle['cursor']}"],
            "changes_from_now": [f"/v1/changes?limit={FEED_PAGE}&cursor=now"],
            "changes_by_session_from_beginning": [
                f"/v1/changes?sessionId={s}&limit={FEED_PAGE}" for s in sessions
            ],
        }
        runs = self._read_runs(server, queries, "changes-warmup", 100)
        for run in runs:
            if run["query"] == "changes_from_middle":
                run["cursor_position"] = middle
        return runs

    def _middle_cursor(self, server: Server, recordings: int) -> dict[str, Any]:
        """A cursor half-way through the feed, from the API: a filtered page moves the
        cursor past up to SCAN_BUDGET changes it looked at, matching or not, so pages of a
        filter nothing matches walk the feed cheaply. Where it landed is checked in the
        database (the share of recordings before the first one it returns)."""
        assert self.database is not None
        pages = max(1, math.ceil(recordings / 2 / SCAN_BUDGET))
        started = time.monotonic()
        params: dict[str, str | int] = {"sessionId": NO_SUCH_SESSION, "limit": SCAN_BUDGET}
        with httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60
        ) as api:
            for _ in range(pages):
                page = api.get("/v1/changes", params=params)
                page.raise_for_status()
                params["cursor"] = page.json()["nextCursor"]
            first = api.get("/v1/changes", params={"cursor": params["cursor"], "limit": 1})
            first.raise_for_status()
        items = first.json()["items"]
        share = asyncio.run(self.database.feed_share_before(int(items[0]["id"]))) if items else None
        found = {
            "cursor": str(params["cursor"]),
            "pages_walked": pages,
            "walk_s": round(time.monotonic() - started, 2),
            "next_recording": items[0]["id"] if items else None,
            "share_of_feed_before": share,
        }
        log(f"  a cursor in the middle of the feed: {pages} pages walked in {found['walk_s']} s, "
            f"{share} of the recordings before it")  # fmt: skip
        return found

    def openloop_phase(self) -> None:
        assert self.database is not None
        with self._server("intake", "workers", self.args.latency_workers) as server:
            self.commands.extend(server.commands)
            self.results["openloop_intake"] = self.intake_openloop(server)
            ids, sessions = asyncio.run(self.database.sample(5000))
            self.results["rows_before_load"] = asyncio.run(self.database.counts())
            self.results["reads_empty"] = self.reads(server, ids, sessions)
        self.results["openloop_floor"] = self.floor_openloop()

    def floor_openloop(self) -> list[dict[str, Any]]:
        """The same client and server settings against the bare endpoint: the latency of
        the client, the loopback network and uvicorn + FastAPI alone, a floor under every
        latency figure of the service."""
        assert self.corpus is not None
        args = self.args
        post_rate = 500.0 if 500.0 in args.rate_list else max(args.rate_list)
        with self._server("bare", "workers", args.latency_workers) as server:
            self.commands.extend(server.commands)
            warm = self._file("floor-warmup")
            write_get_file(warm, ["/healthz"] * 400)
            self.openloop(server, warm, args.read_rate, 1, "warm-up")
            posts = self._file("floor-post")
            write_post_file(posts, self.corpus.head(int(post_rate * args.openloop_duration)))
            gets = self._file("floor-get")
            write_get_file(gets, ["/healthz"] * int(args.read_rate * args.openloop_duration))
            return [
                self.openloop(server, posts, post_rate, args.openloop_duration, "bare POST"),
                self.openloop(server, gets, args.read_rate, args.openloop_duration, "bare GET"),
            ]

    # -- the change feed's wake-up latency --------------------------------------------

    def feed_phase(self) -> None:
        """For each rate, on a server of its own: a long-poll request whose consumer has
        gone stays registered until its wait is up, so a server shared between rates would
        carry the last rate's abandoned waiters into the next."""
        assert self.corpus is not None
        runs = []
        for rate in self.args.feed_rate_list:
            with self._server("intake", "workers", self.args.latency_workers) as server:
                self.commands.extend(server.commands)
                warm = self._file("feed-warmup")
                write_post_file(warm, self.corpus.take(int(rate * 2)))
                self.openloop(server, warm, rate, 2, "warm-up")
                runs.append(self.feed_wakeup(server, rate))
        self.results["feed_wakeup"] = runs

    def feed_wakeup(self, server: Server, rate: float) -> dict[str, Any]:
        """Open-loop intake of the next slice of the spread corpus while FEED_LONG_POLLS
        long-poll consumers (one session of the slice each) and FEED_STREAMS SSE streams
        follow the feed (bench/feed.py); each applied delivery's 2xx is matched to the
        first time each consumer that should see it held its recording at that version."""
        assert self.corpus is not None and self.database is not None
        args = self.args
        deliveries = self.corpus.take(int(rate * args.openloop_duration))
        sessions = [session_of(d) for d in deliveries]
        followed = pick_sessions(sessions, FEED_LONG_POLLS)
        requests = self._file(f"feed-{rate:g}")
        write_post_file(requests, deliveries)
        stem = self.workdir / f"feed-{rate:g}"
        config = stem.with_suffix(".config.json")
        config.touch(mode=0o600)  # it holds the API token
        config.write_bytes(orjson.dumps({
            "url": server.base_url, "token": self.token, "sessions": followed,
            "streams": FEED_STREAMS, "wait": FEED_WAIT_S,
        }))  # fmt: skip
        seen_file, answers_file = stem.with_suffix(".seen.json"), stem.with_suffix(".answers.json")
        command = [sys.executable, "-m", "bench.feed", "--config", str(config),
                   "--out", str(seen_file)]  # fmt: skip
        self.commands.append(command)
        log(f"  feed at {rate:g}/s: {FEED_LONG_POLLS} long-polls, {FEED_STREAMS} streams")
        with stem.with_suffix(".log").open("wb") as consumer_log:
            consumers = subprocess.Popen(
                command, cwd=PROJECT_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=consumer_log, text=True,
            )  # fmt: skip
        try:
            assert consumers.stdin is not None and consumers.stdout is not None
            if consumers.stdout.readline().strip() != "ready":
                consumers.wait(timeout=30)
                raise RuntimeError(
                    f"the feed's consumers did not start ({consumers.returncode}): "
                    + stem.with_suffix(".log").read_text(errors="replace")[-2000:]
                )
            config.unlink()  # read by now
            horizon = HorizonWatch(self.database.dsn).start()
            try:
                sender = self.openloop(
                    server, requests, rate, args.openloop_duration, "intake, feed followed",
                    extra=["--answers", str(answers_file)], companions=[consumers.pid],
                )  # fmt: skip
            finally:
                horizon.stop()
            # Only changes the feed can serve count: wait until no older transaction of the
            # cluster holds the last one back, then give the consumers FEED_GRACE_S.
            settled = asyncio.run(wait_for_horizon(self.database.dsn, FEED_SETTLE_LIMIT_S))
            time.sleep(FEED_GRACE_S)
            consumers.communicate("stop\n", timeout=60)
        finally:
            if consumers.poll() is None:
                consumers.kill()
                consumers.wait()
        seen: dict[str, Any] = orjson.loads(seen_file.read_bytes())
        answers: list[list[Any]] = orjson.loads(answers_file.read_bytes())
        finals = asyncio.run(self.database.versions(answered_recordings(answers)))
        found = wakeups(sessions, answers, seen, finals)
        # The consumers' loop lag while the deliveries came in (not the idle grace after).
        first = min((a[1] for a in answers), default=0.0)
        last = max((a[2] for a in answers), default=0.0)
        lags = [lag for probed, lag in seen["lags"] if first <= probed <= last]
        per_session = sorted(sessions.count(s) for s in followed)
        record: dict[str, Any] = {
            "rate_per_s": rate,
            "duration_s": args.openloop_duration,
            "long_poll_consumers": FEED_LONG_POLLS,
            "sse_streams": FEED_STREAMS,
            "wait_s": FEED_WAIT_S,
            "grace_s": FEED_GRACE_S,
            "followed_sessions": {
                "sessions": len(followed),
                "deliveries_min": per_session[0] if per_session else 0,
                "deliveries_median": per_session[len(per_session) // 2] if per_session else 0,
                "deliveries_total": sum(per_session),
            },
            "intake": sender,
            "horizon": {**horizon.summary(), "passed_last_change_after_s": settled},
            **found,
            "client": {
                "sender_cores": sender["client_cores"],
                "sender_lag_ms": sender["client_lag_ms"],
                "consumers_cores": sender.get("companions_cores"),
                "consumers_loop_lag_ms": summarise(lags),
                "consumers_event_loop": seen.get("event_loop"),
            },
            "consumer_errors": seen["errors"],
            "consumer_first_error": seen["first_error"],
            "consumer_command": command,
        }
        name = f"feed wake-up at {rate:g}/s"
        if seen["errors"] or consumers.returncode:
            self._fail(f"{name}: the consumers had errors {seen['errors']} "
                       f"(exit {consumers.returncode}), first: {seen['first_error']}")  # fmt: skip
        if found["unobserved"]:
            self._fail(
                f"{name}: {found['unobserved']} (delivery, consumer) pairs never seen "
                f"{FEED_GRACE_S:g} s after every change was readable, "
                f"e.g. {found['unobserved_examples'][:2]}"
            )
        held = record["horizon"]["other_databases_longest"]
        if held and held[0]["open_at_least_ms"] > HELD_BACK_MS:
            self.warnings.append(
                f"{name}: a transaction of another database ({held[0]['database']}) was open "
                f"for at least {held[0]['open_at_least_ms']:,.0f} ms while the webhooks came "
                "in; it holds back the feed of every database of the cluster, so the wake-up "
                "figures include that wait: measure on a PostgreSQL nothing else writes to"
            )
        if settled is None:
            self.warnings.append(
                f"{name}: {FEED_SETTLE_LIMIT_S:g} s after the sending, a transaction still "
                "held the feed's horizon behind the run's last change"
            )
        order = found["apply_order"]
        if order["version_base_inconsistent"]:
            self.warnings.append(
                f"{name}: {order['version_base_inconsistent']} recordings had fewer versions "
                "in the table than applied answers in the run"
            )
        for kind in ("long_poll", "sse"):
            lat = found[kind]["latency_ms"]
            log(f"    {kind}: p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms, max "
                f"{lat.get('max')} ms over {found[kind]['observed']:,} pairs, "
                f"{found[kind]['unobserved']} never seen")  # fmt: skip
        return record

    # -- loaded database -------------------------------------------------------------

    def loaded_phase(self) -> None:
        assert self.database is not None
        args = self.args
        # The empty-database reference is taken just before loading, so that the two runs
        # of the comparison are minutes apart, not a whole benchmark apart.
        # Both runs of the comparison start right after a checkpoint (the load ends with
        # one), so that neither writes more full-page images to the WAL than the other.
        asyncio.run(self.database.checkpoint())
        empty = self.saturation("intake", "workers", args.latency_workers)
        log(f"loading {args.rows:,} recordings and {args.events:,} events")
        try:
            loaded = asyncio.run(load(self.database.dsn, args.rows, args.events, log=log))
        except SchemaChanged as exc:
            self._fail(f"loader: {exc}")
            return
        load_report = loaded.as_dict()
        log(f"  loaded in {loaded.total_s:.0f} s ({load_report['copy_rows_per_s']:,} rows/s "
            f"during COPY, {load_report['overall_rows_per_s']:,} rows/s overall)")  # fmt: skip
        counts = asyncio.run(self.database.counts())
        ids, sessions = asyncio.run(self.database.sample(5000))
        warmed = asyncio.run(self.database.warm_read_path())
        if warmed["warmed"]:
            log(f"  read path cached: {warmed['megabytes']:,} MB in {warmed['seconds']} s "
                f"({', '.join(warmed['relations'])})")  # fmt: skip
        else:
            self.warnings.append(f"loaded reads measured with a cold cache: {warmed['why']}")
        section: dict[str, Any] = {
            "load": load_report,
            "counts": counts,
            "intake_empty": empty,
            "read_path_cache": warmed,
        }
        with self._server("intake", "workers", args.latency_workers) as server:
            self.commands.extend(server.commands)
            section["reads"] = self.reads(server, ids, sessions)
            section["changes_reads"] = self.changes_reads(server, sessions, counts["recordings"])
        asyncio.run(self.database.checkpoint())
        section["intake"] = self.saturation("intake", "workers", args.latency_workers)
        if empty["rate_per_s"]:
            section["intake_empty_per_s"] = empty["rate_per_s"]
            section["intake_loaded_vs_empty"] = round(
                section["intake"]["rate_per_s"] / empty["rate_per_s"], 4
            )
        self.results["loaded"] = section

    # -- the whole run ---------------------------------------------------------------

    def run(self) -> int:
        args = self.args
        started = time.time()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = args.out or PROJECT_ROOT / "bench" / "results" / f"{stamp}.json"
        if wrk_path() is None:
            log(f"wrk is not installed. Install it with:\n    {INSTALL_HINT}")
            return EXIT_MISSING_TOOL
        if args.database_url:
            self.database = BenchDatabase(plain_dsn(args.database_url), created=False)
        else:
            self.database = asyncio.run(BenchDatabase.create())
        log(f"database: {redact(self.database.dsn)}")
        try:
            self.database.migrate()
            facts = asyncio.run(self.database.facts())
            problems = durability_problems(facts)
            if problems:
                banner = "!" * 78
                message = (
                    f"PostgreSQL is not durable ({', '.join(problems)}): a 2xx would not mean "
                    "the webhook is on disk, and the figures are not comparable"
                )
                log(f"{banner}\n{message}\n{banner}")
                if not args.allow_unsafe_db:
                    log("refusing to run; pass --allow-unsafe-db to measure anyway")
                    return EXIT_UNSAFE_DATABASE
                self.warnings.append(message)
            self.results.update({
                "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
                "argv": sys.argv,
                "options": {k: (str(v) if isinstance(v, Path) else v)
                            for k, v in vars(args).items()},
                "machine": report.machine(),
                "versions": report.versions(facts["server_version"], wrk_version()),
                "postgres": facts,
                "uvicorn": uvicorn_settings(),
                "database": redact(self.database.dsn),
            })  # fmt: skip
            if args.database_url and args.seed == 1 and not args.no_cache:
                # A kept database has seen seed 1's ids before: use fresh ones.
                args.seed = secrets.randbits(31)
                args.no_cache = True
            cache = None if args.no_cache else PROJECT_ROOT / "bench" / "results" / ".cache"
            with Corpus(args.seed, cache, log) as corpus:
                self.corpus = corpus
                self.corpora["spread"] = corpus
                if "bursts" in args.order_list:
                    self.corpora["bursts"] = Corpus(
                        args.seed, cache, log, order="bursts", signer=corpus.signer
                    )
                self.saturation_phase()
                self.openloop_phase()
                if args.feed_rate_list:
                    self.feed_phase()
                if not args.skip_loaded:
                    self.loaded_phase()
        except KeyboardInterrupt:
            self._fail("interrupted")
        except Exception as exc:  # keep what was measured, and say why it stopped
            traceback.print_exc()
            self._fail(f"aborted: {type(exc).__name__}: {exc}")
        finally:
            if self.database.created and not args.keep_database:
                asyncio.run(self.database.drop())
                log(f"dropped {self.database.name}")
        self.results["wall_s"] = round(time.time() - started, 1)
        self.results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.results["commands"] = self.commands
        self.results["failures"] = self.failures
        self.results["targets"] = report.targets(self.results, args.latency_workers)
        busy = [r["cpu"]["other_processes_cores"] for r in self.results.get("saturation", [])]
        if busy and max(busy) > 0.25:
            self.warnings.append(
                f"other processes used up to {max(busy):.2f} cores during the saturation runs: "
                "the absolute figures are noisy (the ratios less so)"
            )
        self.results["warnings"] = self.warnings
        self._clean_workdir()
        out.parent.mkdir(parents=True, exist_ok=True)
        self.results["out"] = str(out)
        out.write_bytes(orjson.dumps(self.results, option=orjson.OPT_INDENT_2))
        print(report.summary(self.results))
        return EXIT_FAILED_RUN if self.failures else 0

    def _clean_workdir(self) -> None:
        """Request files always go; server logs stay when a run failed, to read why."""
        for path in self.workdir.glob("*.tsv"):
            path.unlink()
        if self.failures:
            self.warnings.append(f"server logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(PROJECT_ROOT)
    return Bench(args).run()
