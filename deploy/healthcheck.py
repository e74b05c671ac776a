#!/usr/bin/env python3
"""The image's HEALTHCHECK: GET /healthz on the address the server was started with.

The address is read from the serving process's own command line (`trackhook serve --port N`,
`--port=N`, an abbreviation argparse accepts, or `uvicorn ... --port N`), so
`docker run IMAGE trackhook serve --host 0.0.0.0 --port 8123` is probed on 8123. With no
server process in sight, $PORT, then 8000. Standard library only: slim has no curl.
Exit status 0 when /healthz answers 200, 1 otherwise, as HEALTHCHECK expects.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

DEFAULT_PORT = 8000  # `trackhook serve` and uvicorn both default to it, and to 127.0.0.1
DEFAULT_HOST = "127.0.0.1"
TIMEOUT_SECONDS = 3.0


def serve_arguments(argv: Sequence[str]) -> list[str] | None:
    """The arguments after `trackhook serve` (or after `uvicorn`), or None for another process."""
    for index, arg in enumerate(argv):
        name = os.path.basename(arg)
        following = list(argv[index + 1 : index + 2])
        if name in ("trackhook", "app.cli") and following == ["serve"]:
            return list(argv[index + 2 :])
        if name == "uvicorn":
            return list(argv[index + 1 :])
    return None


def address_from_arguments(arguments: Sequence[str]) -> tuple[str, int]:
    """Host and port as the server's own argparse reads them (prefixes and `--port=N` too)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=True)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    known, _unknown = parser.parse_known_args(list(arguments))
    return known.host, known.port


def probe_host(host: str) -> str:
    """Where to connect for a server bound to `host`: a wildcard means this machine."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def server_address(
    command_lines: Iterable[Sequence[str]], environ: Mapping[str, str]
) -> tuple[str, int]:
    """The address to probe: the first serving process's, else $PORT, else 8000."""
    for argv in command_lines:
        arguments = serve_arguments(argv)
        if arguments is not None:
            host, port = address_from_arguments(arguments)
            return probe_host(host), port
    from_env = environ.get("PORT", "").strip()
    return DEFAULT_HOST, int(from_env) if from_env.isdigit() else DEFAULT_PORT


def process_command_lines(proc: Path = Path("/proc")) -> Iterable[list[str]]:
    """Every other process's argv, PID 1 first (the server, unless an init runs it)."""
    pids = sorted(int(p.name) for p in proc.iterdir() if p.name.isdigit())
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            raw = (proc / str(pid) / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if raw:
            yield [part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0")]


def healthz_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/healthz" if ":" in host else f"http://{host}:{port}/healthz"


def main(proc: Path = Path("/proc"), environ: Mapping[str, str] = os.environ) -> int:
    host, port = server_address(process_command_lines(proc), environ)
    url = healthz_url(host, port)
    # No proxy: an HTTP_PROXY set for the service must not carry a loopback probe away.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT_SECONDS) as response:
            status = response.status
    except Exception as exc:  # any failure to get an answer is "unhealthy", said plainly
        print(f"unhealthy: {url}: {exc}")
        return 1
    print(f"{'healthy' if status == 200 else 'unhealthy'}: {url}: HTTP {status}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
