"""What the benchmark records about its surroundings, the targets of issue 4, and the
printed summary."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "fastapi", "starlette", "uvicorn", "sqlalchemy", "asyncpg", "pydantic", "orjson",
    "uvloop", "httptools", "cryptography",
)  # fmt: skip


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions(postgres: str, wrk: str) -> dict[str, str]:
    found = {"python": sys.version.split()[0], "postgres": postgres, "wrk": wrk}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _get(data: dict[str, Any], *path: str | int) -> Any:
    value: Any = data
    for key in path:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def targets(results: dict[str, Any], headline_workers: int) -> list[dict[str, Any]]:
    """Issue 4's targets, each with the measured value and whether it is met (None when
    the run did not measure it)."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, higher_is_better: bool) -> None:
        met = None
        if value is not None:
            met = value >= limit if higher_is_better else value < limit
        direction = ">=" if higher_is_better else "<"
        out.append(
            {"target": name, "value": value, "direction": direction, "limit": limit, "met": met}
        )

    for ratio in results.get("ratios", []):
        if ratio["workers"] == headline_workers:
            add(
                f"intake/bare at saturation, {ratio['workers']} processes ({ratio['mode']})",
                ratio["ratio"],
                0.30,
                True,
            )
    for run in results.get("openloop_intake", []):
        if run["rate_per_s"] == 500:
            add("intake p99 at 500 webhooks/s (ms)", _get(run, "latency_ms", "p99"), 10.0, False)
    for run in _get(results, "loaded", "reads") or []:
        limit = 3.0 if run["query"] == "get_by_id" else 10.0
        name = f"loaded {run['query']} p99 at {run['rate_per_s']:g} req/s (ms)"
        add(name, _get(run, "latency_ms", "p99"), limit, False)
    ratio = _get(results, "loaded", "intake_loaded_vs_empty")
    if ratio is not None:
        add("loaded/empty intake at saturation", ratio, 0.90, True)
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  " + "  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def _latency_rows(runs: list[dict[str, Any]], label: str) -> list[list[str]]:
    rows = []
    for run in runs:
        lat = run.get("latency_ms", {})
        # ">=": some requests were never answered; they count with what they had waited.
        bound = ">=" if run.get("latency_is_lower_bound") else ""
        rows.append([
            str(run.get(label, "")), _fmt(run["rate_per_s"], 0), _fmt(run.get("achieved_per_s")),
            bound + _fmt(lat.get("p50"), 2), bound + _fmt(lat.get("p99"), 2),
            bound + _fmt(lat.get("max"), 2),
            _fmt(run.get("errors")), _fmt(run.get("unanswered")),
            _fmt(_get(run, "client_lag_ms", "p99"), 2),
            _fmt(run.get("client_cores"), 2),
        ])  # fmt: skip
    return rows


LATENCY_HEADERS = [
    "rate (req/s)", "achieved (req/s)", "p50 (ms)", "p99 (ms)", "max (ms)", "errors",
    "unanswered", "client lag p99 (ms)", "client CPU (cores)",
]  # fmt: skip


def summary(results: dict[str, Any]) -> str:
    out: list[str] = []
    m, v, pg = results["machine"], results["versions"], results["postgres"]
    out.append(f"trackhook benchmark, {results['started_at']} ({results['wall_s']:.0f} s)")
    out.append(
        f"machine: {m['nproc']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"load average at start {m['load_average_at_start']}"
    )
    out.append(
        f"versions: Python {v['python']}, PostgreSQL {v['postgres']}, FastAPI {v['fastapi']}, "
        f"uvicorn {v['uvicorn']}, SQLAlchemy {v['sqlalchemy']}, asyncpg {v['asyncpg']}, "
        f"{v['wrk']}"
    )
    out.append(
        f"PostgreSQL: fsync={pg.get('fsync')} synchronous_commit={pg.get('synchronous_commit')} "
        f"full_page_writes={pg.get('full_page_writes')} shared_buffers={pg.get('shared_buffers')}"
    )
    u = results["uvicorn"]
    out.append(
        f"uvicorn: --loop {u['loop']} --http {u['http']} --no-access-log "
        f"--timeout-keep-alive {u['timeout_keep_alive']} --backlog {u['backlog']}"
    )
    for warning in results.get("warnings", []):
        out.append(f"WARNING: {warning}")

    sat = results.get("saturation", [])
    if sat:
        o = results["options"]
        out.append("")
        out.append(
            f"Saturation (wrk -t{o['threads']} -c{o['connections']}, {o['duration']:g} s measured "
            f"after {o['warmup']:g} s warm-up; any non-2xx fails the run)"
        )
        rows = []
        for run in sat:
            cpu = run["cpu"]
            conns = "/".join(
                str(p["connections_max"]) for p in cpu["per_process"] if p["connections_max"]
            )
            rows.append([
                run["target"], run["mode"], str(run["workers"]), _fmt(run["rate_per_s"]),
                _fmt(run["errors"]), _fmt(run["latency_closed_loop_ms"].get("p50"), 1),
                _fmt(run["latency_closed_loop_ms"].get("p99"), 1), _fmt(cpu["server_cores"], 2),
                _fmt(cpu["postgres_cores_all_databases"], 2), _fmt(cpu["loadgen_cores"], 2),
                _fmt(cpu["other_processes_cores"], 2), conns or "-",
                "yes" if run["corpus_wrapped"] else "no",
            ])  # fmt: skip
        out.append(_table([
            "target", "mode", "procs", "rate (req/s)", "errors", "p50 (ms)", "p99 (ms)",
            "server (cores)", "postgres (cores)", "wrk (cores)", "others (cores)",
            "conns/process", "wrapped",
        ], rows))  # fmt: skip
        out.append("  (rate = 2xx responses per second; latencies are closed-loop, not SLOs)")
    ratios = results.get("ratios", [])
    if ratios:
        out.append("")
        out.append("Intake vs bare FastAPI endpoint (same uvicorn settings, same wrk script)")
        rows = [
            [str(r["workers"]), r["mode"], _fmt(r["intake_per_s"]), _fmt(r["bare_per_s"]),
             _fmt(r["ratio"], 3)]
            for r in ratios
        ]  # fmt: skip
        out.append(_table(["procs", "mode", "intake (webhooks/s)", "bare (req/s)", "ratio"], rows))

    ol = results.get("openloop_intake", [])
    if ol:
        out.append("")
        out.append(
            f"Open-loop intake latency ({results['options']['latency_workers']} workers, "
            f"{results['options']['openloop_duration']:g} s a rate, from the scheduled send time)"
        )
        out.append(_table(["what", *LATENCY_HEADERS], _latency_rows(ol, "what")))
    reads = results.get("reads_empty", [])
    if reads:
        out.append("")
        out.append(f"Reads after the intake runs ({_fmt(results.get('rows_before_load'))})")
        out.append(_table(["query", *LATENCY_HEADERS], _latency_rows(reads, "query")))

    floor = results.get("openloop_floor", [])
    if floor:
        out.append("")
        out.append(
            "The floor: the same client against the bare endpoint (same uvicorn settings; "
            "POST parses the body, GET /healthz does nothing)"
        )
        out.append(_table(["what", *LATENCY_HEADERS], _latency_rows(floor, "what")))

    loaded = results.get("loaded")
    if loaded:
        load = loaded["load"]
        out.append("")
        out.append(
            f"Loaded database: {_fmt(load['recordings'])} recordings + {_fmt(load['events'])} "
            f"events loaded in {load['total_s']:.0f} s (COPY {load['copy_s']:.0f} s at "
            f"{_fmt(load['copy_rows_per_s'])} rows/s; indexes+FK "
            f"{load['index_and_fk_rebuild_s']:.0f} s; "
            f"VACUUM ANALYZE {load['vacuum_analyze_s']:.0f} s; "
            f"{_fmt(load['overall_rows_per_s'])} rows/s overall)"
        )
        out.append(_table(["query", *LATENCY_HEADERS], _latency_rows(loaded["reads"], "query")))
        intake = loaded.get("intake")
        if intake:
            out.append(
                f"  intake at saturation: loaded {_fmt(intake['rate_per_s'])} webhooks/s vs "
                f"empty {_fmt(loaded.get('intake_empty_per_s'))} webhooks/s -> ratio "
                f"{_fmt(loaded.get('intake_loaded_vs_empty'), 3)} ({_fmt(intake['errors'])} errors)"
            )

    tgs = results.get("targets", [])
    if tgs:
        out.append("")
        out.append("Targets (issue 4)")
        verdicts = {True: "met", False: "MISSED", None: "-"}
        rows = [
            [
                t["target"],
                _fmt(t["value"], 3),
                f"{t['direction']} {t['limit']:g}",
                verdicts[t["met"]],
            ]
            for t in tgs
        ]
        out.append(_table(["target", "value", "limit", ""], rows))
    out.append("")
    failures = results.get("failures", [])
    if failures:
        out.append(f"FAILED: {len(failures)} run(s) had errors:")
        out.extend(f"  - {f}" for f in failures)
    else:
        out.append("every run: 0 errors")
    out.append(f"results: {results.get('out')}")
    return "\n".join(out)
