"""Where the workers of `trackhook serve --workers N` keep their metrics.

prometheus-client's multiprocess mode: each worker writes its values to files in
PROMETHEUS_MULTIPROC_DIR and a scrape, whichever worker it reaches, sums them all. The
library picks its mode when it is first imported, from the environment, so the directory
is set here, before anything imports it (the workers inherit the environment, and import
the app afresh). Standard library only, for that reason.

One server, one fresh directory (so no count of an earlier run is summed in), named after
the server's process and removed when it exits, or by the next server if it was killed
outright. One process needs none: its metrics live in it, process metrics included.
A PROMETHEUS_MULTIPROC_DIR given in the environment is not used, either way.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "trackhook-metrics-"  # then the server's pid


def prepare_metrics_directory(workers: int) -> Path | None:
    """Call before anything imports prometheus-client (app.server.run does)."""
    os.environ.pop(ENV, None)
    if workers == 1:
        return None
    _remove_dead_servers_directories()
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ[ENV] = str(path)
    return path


def _remove_dead_servers_directories() -> None:
    """A server killed outright (SIGKILL, the OOM killer) never removed its directory."""
    for path in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        pid = path.name.removeprefix(PREFIX).partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True
