"""A throwaway PostgreSQL cluster the outage tests may stop and start at will
(never the shared server on 5432)."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tests.support.server import free_port

SHARED_PORT = 5432
# PostgreSQL refuses to run as root; as root we run it as this (existing) system user.
UNPRIVILEGED_USER = "postgres"
StopMode = Literal["immediate", "fast", "smart"]


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries, or no user to run them as."""


def find_bin_dir() -> Path:
    """The newest installed `/usr/lib/postgresql/<version>/bin` with initdb and pg_ctl."""
    candidates = []
    for directory in Path("/usr/lib/postgresql").glob("*/bin"):
        version = directory.parent.name
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            numeric = tuple(int(part) for part in re.findall(r"\d+", version))
            candidates.append((numeric, directory))
    if not candidates:
        raise PostgresUnavailable("no initdb/pg_ctl under /usr/lib/postgresql/*/bin")
    return max(candidates)[1]


@dataclass
class PrivatePostgres:
    """One cluster in a temporary directory, trust auth, on 127.0.0.1:<free port>."""

    port: int = field(default_factory=free_port)
    bin_dir: Path = field(default_factory=find_bin_dir)
    root: Path | None = None

    def __post_init__(self) -> None:
        if self.port == SHARED_PORT:
            raise ValueError("the private cluster must never use the shared server's port")
        self._as_user: list[str] = []
        self._owner: tuple[int, int] | None = None
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(UNPRIVILEGED_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root and no {UNPRIVILEGED_USER!r} user"
                ) from None
            self._owner = (entry.pw_uid, entry.pw_gid)
            self._as_user = ["runuser", "-u", UNPRIVILEGED_USER, "--"]

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "init() has not run"
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        assert self.root is not None, "init() has not run"
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, args: Sequence[str], timeout: float = 60) -> None:
        assert self.root is not None
        completed = subprocess.run(
            [*self._as_user, *args],
            cwd=self.root,  # the unprivileged user may not be able to read our cwd
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if completed.returncode != 0:
            output = (completed.stdout + completed.stderr).decode(errors="replace")
            raise RuntimeError(f"{' '.join(args)} exited {completed.returncode}:\n{output}")

    def init(self) -> PrivatePostgres:
        self.root = Path(tempfile.mkdtemp(prefix="trackhook-pg-"))
        if self._owner is not None:
            os.chown(self.root, *self._owner)
        # --no-sync only skips initdb's own final flush; the running server keeps fsync on.
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D", str(self.data_dir),
                "-U", "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ]
        )  # fmt: skip
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
            "max_connections": "100",
            "shared_buffers": "32MB",
        }
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# trackhook reliability tests\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        return self

    def start(self) -> None:
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D", str(self.data_dir),
                "-l", str(self.log_file),
                "-w", "-t", "60",
                "start",
            ]
        )  # fmt: skip

    def stop(self, mode: StopMode = "fast") -> None:
        """`immediate` is a crash as far as clients and the WAL are concerned."""
        self._run(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"]
        )

    def is_running(self) -> bool:
        return self.root is not None and (self.data_dir / "postmaster.pid").exists()

    def cleanup(self) -> None:
        """Always safe to call: stops the cluster if it runs, then removes its directory."""
        if self.root is None:
            return
        try:
            if self.is_running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> PrivatePostgres:
        self.init()
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.cleanup()
