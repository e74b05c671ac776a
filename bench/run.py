"""`python -m bench`: the whole benchmark in one command (see docs/PERFORMANCE.md).

1. saturation: wrk against the service and against a bare FastAPI app with the same
   uvicorn settings, for each process count, as `uvicorn --workers N` and as N processes
   on one SO_REUSEPORT port; the headline is the ratio intake/bare;
2. open-loop latency of the intake at fixed rates, and of the query API at a fixed rate;
3. the same queries and intake saturation once 1M recordings and 10M events are loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import report
from bench.database import DEFAULT_SERVER, BenchDatabase, durability_problems, plain_dsn, redact
from bench.loader import SchemaChanged, load
from bench.procstat import Window
from bench.servers import MODES, PROJECT_ROOT, Server, uvicorn_settings
from bench.workload import Corpus, write_get_file, write_post_file
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
    p.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument("--rates", default="200,500,1000", help="open-loop intake rates, webhooks/s")
    p.add_argument("--read-rate", type=float, default=300.0, help="open-loop query rate, req/s")
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
        self.corpus: Corpus | None = None
        self.last_intake_rate = FIRST_GUESS_PER_S
        self._files = 0

    # -- helpers ---------------------------------------------------------------------

    def _file(self, stem: str) -> Path:
        self._files += 1
        return self.workdir / f"{self._files:03d}-{stem}.tsv"

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

    def saturation(self, target: str, mode: str, workers: int) -> dict[str, Any]:
        assert self.corpus is not None
        args = self.args
        with self._server(target, mode, workers) as server:
            if target == "bare":
                warm_file = measure_file = self._file("bare")
                write_post_file(measure_file, self.corpus.head(BARE_CORPUS))
            else:
                warm_file = self._file("intake-warmup")
                guess = self.last_intake_rate
                write_post_file(warm_file, self.corpus.take(int(guess * args.warmup) + 500))
            warm = self._wrk(server, warm_file, args.warmup)
            if warm.errors:
                self._fail(f"{target} {mode} x{workers} warm-up: {warm.errors} errors, "
                           f"first: {warm.first_bad}")  # fmt: skip
            if target == "intake":
                # Enough fresh deliveries that the measured run need not wrap (50% margin).
                rate = max(warm.rate, self.last_intake_rate * 0.5, 100.0)
                measure_file = self._file("intake")
                size = int(rate * args.duration * 1.5) + 1000
                write_post_file(measure_file, self.corpus.take(size))
            window = Window(server.roots(), server.port).start()
            run = self._wrk(server, measure_file, args.duration)
            window.stop()
        self.commands.extend(server.commands)
        self.commands.append(run.command)
        if target == "intake":
            self.last_intake_rate = run.rate
        record: dict[str, Any] = {
            "target": target,
            "mode": mode,
            "workers": workers,
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
            self._fail(f"{target} {mode} x{workers}: {run.errors} errors, first: {run.first_bad}")
        if record["corpus_wrapped"]:
            self.warnings.append(
                f"intake {mode} x{workers}: wrk went round its {run.corpus:,} deliveries, so "
                "part of the run replayed them (more duplicates/restarts than designed)"
            )
        log(
            f"  {target} {mode} x{workers}: {run.rate:,.0f} /s, {run.errors} errors, "
            f"server {record['cpu']['server_cores']} cores, wrk {record['cpu']['loadgen_cores']} "
            f"cores, others {record['cpu']['other_processes_cores']} cores"
        )
        return record

    def saturation_phase(self) -> None:
        runs: list[dict[str, Any]] = []
        ratios: list[dict[str, Any]] = []
        for workers in self.args.worker_counts:
            modes = self.args.mode_list if workers > 1 else self.args.mode_list[:1]
            for mode in modes:
                # Bare and intake back to back, so the ratio sees the same machine.
                bare = self.saturation("bare", mode, workers)
                intake = self.saturation("intake", mode, workers)
                runs.extend([bare, intake])
                ratios.append({
                    "workers": workers,
                    "mode": mode,
                    "intake_per_s": intake["rate_per_s"],
                    "bare_per_s": bare["rate_per_s"],
                    "ratio": round(intake["rate_per_s"] / bare["rate_per_s"], 4)
                    if bare["rate_per_s"]
                    else None,
                })  # fmt: skip
        self.results["saturation"] = runs
        self.results["ratios"] = ratios

    # -- open loop -------------------------------------------------------------------

    def openloop(
        self, server: Server, requests_file: Path, rate: float, duration: float, what: str
    ) -> dict[str, Any]:
        command = [
            sys.executable, "-m", "bench.openloop", "--url", server.base_url,
            "--requests", str(requests_file), "--rate", f"{rate:g}",
            "--duration", f"{duration:g}", "--header", f"Authorization: Bearer {self.token}",
        ]  # fmt: skip
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
        result["cpu"] = window.summary(result["client_cpu_s"])
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
        return runs

    def reads(self, server: Server, ids: list[int], sessions: list[str]) -> list[dict[str, Any]]:
        args = self.args
        if not ids:
            self.warnings.append("no recordings to query: the read runs were skipped")
            return []
        queries = {
            "get_by_id": [f"/v1/recordings/{i}" for i in ids],
            "list_by_session": [f"/v1/recordings?sessionId={s}&limit=50" for s in sessions],
            "list_stopped": ["/v1/recordings?status=stopped&limit=50"],
        }
        warm = self._file("reads-warmup")
        write_get_file(warm, [p for paths in queries.values() for p in paths[:200]])
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
                self.saturation_phase()
                self.openloop_phase()
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
