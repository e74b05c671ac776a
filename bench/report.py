"""What the benchmark records about its surroundings, the targets of issues 4, 8 and 9,
and the printed summary."""

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


def _order(run: dict[str, Any]) -> str:
    return run.get("order") or "spread"  # runs from before the orders existed were spread


def targets(results: dict[str, Any], headline_workers: int) -> list[dict[str, Any]]:
    """Issue 4's targets, issue 8's for bursts and issue 9's for the feed's wake-up, each
    with the measured value and whether it is met (None when the run did not measure it)."""
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
        if ratio["workers"] != headline_workers:
            continue
        where = f"{ratio['workers']} processes ({ratio['mode']})"
        if _order(ratio) == "spread":
            add(f"intake/bare at saturation, {where}", ratio["ratio"], 0.30, True)
        else:
            add(f"bursts: intake/bare at saturation, {where}", ratio["ratio"], 0.30, True)
            add(f"bursts/spread at saturation, {where}", ratio.get("vs_spread"), 0.85, True)
    for run in results.get("openloop_intake", []):
        if run["rate_per_s"] == 500 and _order(run) == "spread":
            add("intake p99 at 500 webhooks/s (ms)", _get(run, "latency_ms", "p99"), 10.0, False)
    for run in _get(results, "loaded", "reads") or []:
        limit = 3.0 if run["query"] == "get_by_id" else 10.0
        name = f"loaded {run['query']} p99 at {run['rate_per_s']:g} req/s (ms)"
        add(name, _get(run, "latency_ms", "p99"), limit, False)
    ratio = _get(results, "loaded", "intake_loaded_vs_empty")
    if ratio is not None:
        add("loaded/empty intake at saturation", ratio, 0.90, True)
    for run in results.get("feed_wakeup", []):
        for kind, label in (("long_poll", "long-poll"), ("sse", "SSE")):
            name = f"feed wake-up p99 at {run['rate_per_s']:g} webhooks/s, {label} (ms)"
            add(name, _get(run, kind, "latency_ms", "p99"), 100.0, False)
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


def _feed_tables(runs: list[dict[str, Any]]) -> list[str]:
    first = runs[0]
    out = [
        f"Change feed wake-up ({first['duration_s']:g} s a rate, open loop; "
        f"{first['long_poll_consumers']} long-poll consumers of one session each, "
        f"wait={first['wait_s']:g}; {first['sse_streams']} SSE streams, unfiltered): from a "
        "webhook's 2xx at the sender to the first answer or event holding its version"
    ]
    rows = []
    for run in runs:
        for kind, label in (("long_poll", "long-poll"), ("sse", "SSE")):
            part = run[kind]
            lat = part["latency_ms"]
            rows.append([
                _fmt(run["rate_per_s"], 0), label, _fmt(part["consumers"]), _fmt(part["pairs"]),
                _fmt(lat.get("p50"), 2), _fmt(lat.get("p90"), 2), _fmt(lat.get("p99"), 2),
                _fmt(lat.get("max"), 2), _fmt(lat.get("min"), 2), _fmt(part["negative"]),
                _fmt(part["unobserved"]),
            ])  # fmt: skip
    out.append(_table([
        "rate (webhooks/s)", "consumers", "n", "pairs", "p50 (ms)", "p90 (ms)", "p99 (ms)",
        "max (ms)", "min (ms)", "negative", "never seen",
    ], rows))  # fmt: skip
    out.append(
        "  (a pair is an applied delivery and a consumer that should see it; negative: the "
        "consumer had it before the sender had the 2xx)"
    )
    rows = []
    for run in runs:
        intake, client, cpu = run["intake"], run["client"], run["intake"]["cpu"]
        order = run["apply_order"]
        rows.append([
            _fmt(run["rate_per_s"], 0), _fmt(intake.get("achieved_per_s")),
            _fmt(_get(intake, "latency_ms", "p50"), 2), _fmt(_get(intake, "latency_ms", "p99"), 2),
            _fmt(run["applied"]),
            f"{order['in_flight_together']}/{order['answered_out_of_apply_order']}",
            _fmt(_get(client, "sender_lag_ms", "p99"), 2), _fmt(client["sender_cores"], 2),
            _fmt(_get(client, "consumers_loop_lag_ms", "p99"), 2),
            _fmt(_get(client, "consumers_loop_lag_ms", "max"), 2),
            _fmt(client["consumers_cores"], 2), _fmt(cpu["server_cores"], 2),
            _fmt(cpu["postgres_cores_all_databases"], 2), _fmt(cpu["other_processes_cores"], 2),
        ])  # fmt: skip
    out.append(_table([
        "rate", "achieved", "intake p50 (ms)", "intake p99 (ms)", "applied",
        "in flight together/answered out of order", "sender lag p99 (ms)", "sender (cores)",
        "consumers lag p99 (ms)", "consumers lag max (ms)", "consumers (cores)",
        "server (cores)", "postgres (cores)", "others (cores)",
    ], rows))  # fmt: skip
    for run in runs:
        h = run.get("horizon") or {}
        others = h.get("other_databases_longest") or [{}]
        ours = h.get("this_database_longest") or [{}]
        out.append(
            f"  {_fmt(run['rate_per_s'], 0)}/s: what held the feed's horizon: "
            f"{_fmt(h.get('other_databases_transactions'))} write transactions of other "
            f"databases (longest {_fmt(others[0].get('open_at_least_ms'), 0)} ms, "
            f"{others[0].get('database', '-')}; one older than 100 ms open "
            f"{_fmt(h.get('held_back_share'), 3)} of the time), this database's longest "
            f"{_fmt(ours[0].get('open_at_least_ms'), 0)} ms; the horizon passed the last "
            f"change {_fmt(h.get('passed_last_change_after_s'), 2)} s after the sending"
        )
    return out


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
                run["target"], run.get("order") or "-", run["mode"], str(run["workers"]),
                _fmt(run["rate_per_s"]),
                _fmt(run["errors"]), _fmt(run["latency_closed_loop_ms"].get("p50"), 1),
                _fmt(run["latency_closed_loop_ms"].get("p99"), 1), _fmt(cpu["server_cores"], 2),
                _fmt(cpu["postgres_cores_all_databases"], 2), _fmt(cpu["loadgen_cores"], 2),
                _fmt(cpu["other_processes_cores"], 2), conns or "-",
                "yes" if run["corpus_wrapped"] else "no",
            ])  # fmt: skip
        out.append(_table([
            "target", "order", "mode", "procs", "rate (req/s)", "errors", "p50 (ms)", "p99 (ms)",
            "server (cores)", "postgres (cores)", "wrk (cores)", "others (cores)",
            "conns/process", "wrapped",
        ], rows))  # fmt: skip
        out.append("  (rate = 2xx responses per second; latencies are closed-loop, not SLOs)")
    ratios = results.get("ratios", [])
    if ratios:
        out.append("")
        out.append("Intake vs bare FastAPI endpoint (same uvicorn settings, same wrk script)")
        rows = [
            [str(r["workers"]), r["mode"], _order(r), _fmt(r["intake_per_s"]),
             _fmt(r["bare_per_s"]), _fmt(r["ratio"], 3), _fmt(r.get("vs_spread"), 3)]
            for r in ratios
        ]  # fmt: skip
        out.append(_table([
            "procs", "mode", "order", "intake (webhooks/s)", "bare (req/s)", "ratio",
            "bursts/spread",
        ], rows))  # fmt: skip
    arrived = [run for run in sat if run.get("arrivals")]
    if arrived:
        out.append("")
        out.append(
            "How each track's deliveries arrived (log rows of the measured run; tracks with "
            "more than one): first to last arrival, and the share committed in one "
            "transaction with another of their track"
        )
        rows = []
        for run in arrived:
            a = run["arrivals"]
            rows.append([
                _order(run), run["mode"], str(run["workers"]), _fmt(a["tracks_with_several"]),
                _fmt(a["their_deliveries"]), _fmt(_get(a, "first_to_last_ms", "p50"), 1),
                _fmt(_get(a, "first_to_last_ms", "p90"), 1),
                _fmt(_get(a, "first_to_last_ms", "p99"), 1),
                _fmt(a["committed_with_own_track_share"], 3),
            ])  # fmt: skip
        out.append(_table([
            "order", "mode", "procs", "tracks", "their deliveries", "p50 (ms)", "p90 (ms)",
            "p99 (ms)", "same commit",
        ], rows))  # fmt: skip

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

    feed = results.get("feed_wakeup", [])
    if feed:
        out.append("")
        out.extend(_feed_tables(feed))

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
        changes = loaded.get("changes_reads", [])
        if changes:
            middle: dict[str, Any] = next(
                (r["cursor_position"] for r in changes if "cursor_position" in r), {}
            )
            out.append(
                "  the change feed's pages (limit 100; the middle cursor, walked in "
                f"{_fmt(middle.get('pages_walked'))} filtered pages, has "
                f"{_fmt(middle.get('share_of_feed_before'), 3)} of the recordings before it):"
            )
            out.append(_table(["query", *LATENCY_HEADERS], _latency_rows(changes, "query")))
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
        out.append("Targets (issues 4, 8 and 9)")
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
