"""`trackhook` console command: serve, migrate, and developer helpers for signing.

Each command that reads the settings checks all of them first, and what it needs besides
(serve: API tokens, the webhook key, the server's settings; verify-log: the key), before
anything touches the database: each problem is one line, `trackhook <command>: <problem>`,
exit status 2. A database that cannot be reached is one line too, exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import re
import socket
import sqlite3
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import asyncpg
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import ValidationError
from pydantic_settings import BaseSettings
from sqlalchemy.engine import make_url

from app.core.config import Settings, validation_problems
from app.core.errors import AppError
from app.core.logs import configure_logging
from app.core.release import release_version
from app.ledger.faults import sqlstate_of
from app.ledger.migrations import (
    current_revision,
    head_revision,
    is_older_than_the_code,
    upgrade_to_head,
)
from app.ledger.prune import BATCH_SIZE
from app.server.settings import ServingSettings

logger = logging.getLogger("trackhook.migrate")

EXIT_REFUSED = 2  # the settings (or the arguments, as argparse says) cannot work
EXIT_UNREACHABLE = 1


class Refused(Exception):
    """The command cannot go on; each problem becomes one line on stderr."""

    def __init__(self, status: int, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.status = status
        self.problems = problems


def _checked_settings(*, keys: bool = False, serving: bool = False) -> Settings:
    """Every setting, and with `keys` the webhook key, with `serving` what serving needs:
    all problems at once, before anything touches the database."""
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = Settings()
    except ValidationError as exc:
        problems += validation_problems(exc)
    if serving:
        try:
            ServingSettings()
        except ValidationError as exc:
            problems += validation_problems(exc)
        if settings is not None:
            problems += settings.serving_problems()
    if keys and settings is not None:
        problems += _key_problems(settings)
    if problems or settings is None:
        raise Refused(EXIT_REFUSED, problems)
    return settings


def _key_problems(settings: Settings) -> list[str]:
    """The webhook key read as the service reads it (intake's own loader)."""
    from app.intake.public_key import PublicKeyProvider
    from app.intake.signature import PublicKeyError

    if settings.videosdk_public_key is not None:
        source = "VIDEOSDK_PUBLIC_KEY"
    elif settings.videosdk_public_key_file is not None:
        source = f"VIDEOSDK_PUBLIC_KEY_FILE={settings.videosdk_public_key_file}"
    else:
        return []  # fetched from VIDEOSDK_PUBLIC_KEY_URL on the first signed webhook
    try:
        PublicKeyProvider(settings)
    except PublicKeyError as exc:
        return [f"{source}: {exc}"]
    except OSError as exc:
        return [f"{source}: {exc.strerror or exc}"]
    return []


# What a driver raises when it cannot connect (or lost the connection): the server or the
# network, the login, the database's name, the server's connection slots.
_CANNOT_CONNECT = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.TooManyConnectionsError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)
_SQLITE_CANNOT_OPEN = frozenset({"SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_READONLY"})


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what SQLAlchemy wrapped (`orig`) and what caused it, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__


def _cannot_connect(exc: BaseException, settings: Settings) -> str | None:
    """Why the database cannot be reached (or opened), in words; None for any other fault."""
    for cause in reversed(list(_chain(exc))):  # the driver's own, innermost, first
        if isinstance(cause, sqlite3.Error):
            name = "_".join(str(getattr(cause, "sqlite_errorname", "")).split("_")[:2])
            return str(cause) if name in _SQLITE_CANNOT_OPEN else None
        if isinstance(cause, socket.gaierror):
            return f"the host name cannot be resolved ({cause.strerror})"
        if isinstance(cause, TimeoutError):
            return (
                f"no answer within {settings.db_connect_timeout_seconds:g} s "
                "(DB_CONNECT_TIMEOUT_SECONDS)"
            )
        if isinstance(cause, OSError):
            return os.strerror(cause.errno) if cause.errno else str(cause)
        if isinstance(cause, _CANNOT_CONNECT):
            return str(cause).strip().splitlines()[0] if str(cause).strip() else repr(cause)
    if (sqlstate_of(exc) or "")[:2] == "08":
        return str(exc).strip().splitlines()[0]
    return None


@contextmanager
def _database(settings: Settings) -> Iterator[None]:
    """Work on the database; one that cannot be reached is one line (exit 1), not a
    traceback. Any other fault is a bug and keeps its traceback."""
    try:
        yield
    except Exception as exc:
        reason = _cannot_connect(exc, settings)
        if reason is None:
            raise
        url = make_url(settings.database_url)
        if settings.is_sqlite:
            where = f"cannot open the SQLite database {url.database}"
        else:
            where = (
                f"cannot connect to PostgreSQL at {url.host or 'localhost'}:{url.port or 5432} "
                f"(database {url.database}, user {url.username})"
            )
        raise Refused(EXIT_UNREACHABLE, [f"{where}: {reason}"]) from None


def _reach_migrated(settings: Settings) -> None:
    """Connect, check that the schema is one this release runs on, and let go: a database
    that cannot be reached, or was never migrated, is then said once, before the work
    starts (a missing table found halfway would be a 503 meant for VideoSDK, and a
    traceback)."""
    from app.ledger.engine import create_engine

    if settings.is_sqlite:
        path = make_url(settings.database_url).database
        if path and path != ":memory:" and not Path(path).exists():
            # Connecting would create the file; there is nothing in it to work on anyway.
            _not_migrated(None)

    async def revision() -> str | None:
        engine = create_engine(settings)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(current_revision)
        finally:
            await engine.dispose()

    found = asyncio.run(revision())
    if is_older_than_the_code(found):
        _not_migrated(found)


def _not_migrated(found: str | None) -> NoReturn:
    at = "no schema" if found is None else f"at {found}"
    raise Refused(
        EXIT_UNREACHABLE,
        [
            f"the database has not been migrated ({at}; this release needs {head_revision()}): "
            "run `trackhook migrate` first"
        ],
    )


def _migrate_database(settings: Settings) -> None:
    # Logged, not printed: with LOG_FORMAT=json `trackhook serve`'s first line is JSON too.
    configure_logging(settings.log_level, settings.log_format)
    with _database(settings):
        newer = upgrade_to_head(settings.database_url)
    where = settings.database_url.split("@")[-1]
    if newer is not None:
        logger.info(
            "left %s at %s: a later release's migration, which this release's code runs on "
            "(docs/OPERATIONS.md, Migrations)",
            where,
            newer,
        )
        return
    logger.info("migrated %s to head", where)


def _migrate(_args: argparse.Namespace) -> int:
    _migrate_database(_checked_settings())
    return 0


def _serve(args: argparse.Namespace) -> int:
    from app.server.metrics_dir import prepare_metrics_directory

    # First: prometheus-client picks its mode (one process, or workers) when imported.
    prepare_metrics_directory(args.workers)
    from app.server.run import serve

    settings = _checked_settings(keys=True, serving=True)
    if not args.no_migrate:
        _migrate_database(settings)
    graceful_timeout = args.graceful_timeout
    if graceful_timeout is None:
        graceful_timeout = ServingSettings().graceful_timeout_seconds
    serve(
        host=args.host,
        port=args.port,
        workers=args.workers,
        graceful_timeout=graceful_timeout,
        log_level=args.log_level,
    )
    return 0


def _keygen(args: argparse.Namespace) -> int:
    """A development key pair, to sign webhooks the way VideoSDK does."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = Path(args.private)
    public = Path(args.public)
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    print(f"wrote {private} and {public}", file=sys.stderr)
    return 0


def _sign(args: argparse.Namespace) -> int:
    """Print the videosdk-signature header value for a body file (or stdin)."""
    loaded = serialization.load_pem_private_key(Path(args.key).read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        print("the key is not an RSA private key", file=sys.stderr)
        return 2
    body = sys.stdin.buffer.read() if args.body == "-" else Path(args.body).read_bytes()
    signature = loaded.sign(body, padding.PKCS1v15(), hashes.SHA256())
    print(base64.b64encode(signature).decode())
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    """Recompute the recordings from the event log; exit 1 on differences left unrepaired."""
    from app.ledger.engine import create_engine
    from app.ledger.rebuild import RebuildReport, rebuild

    settings = _checked_settings()

    async def run() -> RebuildReport:
        engine = create_engine(settings)
        try:
            return await rebuild(engine, repair=args.repair)
        finally:
            await engine.dispose()

    with _database(settings):
        _reach_migrated(settings)
        report = asyncio.run(run())
    print("\n".join(report.lines()))
    return 1 if report.differences and not args.repair else 0


def _prune(args: argparse.Namespace) -> int:
    """Remove old deliveries the log no longer needs (app/ledger/prune.py)."""
    from app.ledger.engine import Role, create_engine
    from app.ledger.prune import PruneReport, prune

    settings = _checked_settings()
    cutoff = datetime.now(UTC) - args.older_than
    said = [time.monotonic()]

    def progress(report: PruneReport) -> None:
        # A line on stderr every 10 s, so a long run shows it is moving.
        if time.monotonic() - said[0] >= 10:
            said[0] = time.monotonic()
            print(
                f"trackhook prune: {report.removed} rows "
                f"{'would go' if args.dry_run else 'removed'} so far, "
                f"{report.batches} batches, {report.seconds:.0f} s",
                file=sys.stderr,
            )

    async def run() -> PruneReport:
        # A dry run reads on a read-only connection: the database itself refuses a write.
        engine = create_engine(settings, Role.READS if args.dry_run else Role.MAINTENANCE)
        try:
            return await prune(
                engine,
                cutoff,
                dry_run=args.dry_run,
                batch_size=args.batch_size,
                lock_timeout_seconds=settings.db_statement_timeout_seconds,
                after_batch=progress,
            )
        finally:
            await engine.dispose()

    with _database(settings):
        _reach_migrated(settings)
        try:
            report = asyncio.run(run())
        except AppError as exc:
            raise Refused(
                EXIT_UNREACHABLE,
                [
                    f"stopped: {exc} (every batch before this one is done and stays done; "
                    "run it again to go on)"
                ],
            ) from None
    print("\n".join(report.lines()))
    return 0


_DURATION = re.compile(r"(\d+)([dhm])")
_UNITS = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}


def _duration(text: str) -> timedelta:
    """`90d`, `12h` or `30m`: a whole number of days, hours or minutes, more than 0."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (a whole number and a unit: 90d, 12h or 30m)"
        )
    count = int(found.group(1))
    if count == 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text!r}")
    try:
        age = count * _UNITS[found.group(2)]
        datetime.now(UTC) - age  # its cutoff must be a date too
    except OverflowError:
        raise argparse.ArgumentTypeError(f"too long: {text!r}") from None
    return age


def _batch_size(text: str) -> int:
    value = _whole_number(text)
    if not 1 <= value <= 50_000:
        raise argparse.ArgumentTypeError(f"must be 1..50000, not {value}")
    return value


def _verify_log(_args: argparse.Namespace) -> int:
    """Check every logged delivery's signature again; exit 1 if one does not verify."""
    from app.audit import verify_log
    from app.intake.public_key import PublicKeyUnavailable

    settings = _checked_settings(keys=True)
    try:
        with _database(settings):
            _reach_migrated(settings)
            report = asyncio.run(verify_log(settings))
    except PublicKeyUnavailable as exc:
        url = settings.videosdk_public_key_url
        raise Refused(EXIT_UNREACHABLE, [f"VIDEOSDK_PUBLIC_KEY_URL={url}: {exc}"]) from None
    print("\n".join(report.lines()))
    return 1 if report.failed else 0


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _positive_int(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _port(text: str) -> int:
    value = _whole_number(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 1..65535, not {value}")
    return value


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help (not for flags, nor when it has none); the
    epilogs' tables of variables as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if action.option_strings and default not in (None, False, argparse.SUPPRESS):
            if "%(default)" not in text:
                text += " (default: %(default)s)"
        return text


def _shown_default(model: type[BaseSettings], name: str) -> str:
    field = model.model_fields[name]
    value: Any = field.get_default(call_default_factory=True)
    if value is None or value == []:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    return str(getattr(value, "value", value))


def _environment(*names: str, note: str = "") -> str:
    """The epilog: the variables a command reads, with their defaults (README, Settings)."""
    rows = [
        (name.upper(), _shown_default(model, name))
        for model in (Settings, ServingSettings)
        for name in model.model_fields
        if not names or name in names
    ]
    width = max(len(name) for name, _ in rows) + 2
    lines = [f"  {name:<{width}}{default}" for name, default in rows]
    notes = ["", note] if note else []
    return "\n".join(["environment variables (README, Settings):", *lines, *notes])


_CHECKED = (
    "Every other setting is checked too: each problem is one line (exit status 2), before\n"
    "the database is touched."
)
_DATABASE = ("database_url", "database_url_file", "db_connect_timeout_seconds")
_KEY = (
    "videosdk_public_key",
    "videosdk_public_key_file",
    "videosdk_public_key_url",
    "public_key_fetch_timeout_seconds",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackhook",
        description=__doc__,
        epilog="`trackhook COMMAND --help`: a command's options, defaults and variables.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {release_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str, description: str, epilog: str | None = None) -> Any:
        sub = commands.add_parser(
            name,
            help=summary,
            description=textwrap.fill(description, 88),
            epilog=epilog,
            formatter_class=_HelpFormatter,
        )
        return sub

    exits = "exit status: 0 done; 1 the database cannot be reached; 2 a setting cannot work."
    serve = command(
        "serve",
        "migrate the database, then serve HTTP",
        "Check the settings, the webhook key and the API tokens; migrate the database (unless "
        "--no-migrate); then serve HTTP.",
        _environment() + "\n\n" + exits,
    )
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    serve.add_argument("--port", type=_port, default=8000, help="the port to listen on")
    serve.add_argument(
        "--workers", type=_positive_int, default=1, help="server processes sharing the port"
    )
    serve.add_argument(
        "--graceful-timeout",
        type=_positive_int,
        default=None,
        help="seconds from SIGTERM to exit (default: GRACEFUL_TIMEOUT_SECONDS, else 30)",
    )
    serve.add_argument(
        "--no-migrate",
        action="store_true",
        help="skip the migration (run `trackhook migrate` as its own step)",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="uvicorn's log level; it logs at the stricter of this and LOG_LEVEL",
    )
    serve.set_defaults(handler=_serve)

    migrate = command(
        "migrate",
        "alembic upgrade head on DATABASE_URL",
        "Upgrade the database to this release's schema (alembic upgrade head). Several at "
        "once are safe: each waits for the one migrating (a PostgreSQL advisory lock; a lock "
        "file beside a SQLite database), then finds the schema at head.",
        _environment(*_DATABASE, note=_CHECKED) + "\n\n" + exits,
    )
    migrate.set_defaults(handler=_migrate)

    keygen = command(
        "keygen",
        "write a development RSA key pair",
        "Write a development key pair, to sign webhooks the way VideoSDK does.",
    )
    keygen.add_argument("--private", default="dev-private.pem", help="the private key's file")
    keygen.add_argument("--public", default="dev-public.pem", help="the public key's file")
    keygen.set_defaults(handler=_keygen)

    sign = command(
        "sign",
        "print the signature header for a body",
        "Print the videosdk-signature header value for a body, signed with a private key.",
    )
    sign.add_argument("body", help="file with the exact body bytes, or - for stdin")
    sign.add_argument("--key", default="dev-private.pem", help="the PEM private key")
    sign.set_defaults(handler=_sign)

    rebuild = command(
        "rebuild",
        "recompute every recording from the event log and report differences",
        "Recompute every recording from the event log and report the ones that differ.",
        _environment(*_DATABASE, note=_CHECKED)
        + "\n\nexit status: 0 no difference, or --repair; 1 a difference, or the database "
        "cannot be\nreached; 2 a setting cannot work.",
    )
    rebuild.add_argument(
        "--repair", action="store_true", help="rewrite the differing recordings from the log"
    )
    rebuild.set_defaults(handler=_rebuild)

    prune = command(
        "prune",
        "remove old deliveries the log no longer needs (retention)",
        "Remove from the log the ignored and rejected deliveries, and the events of finished "
        "recordings, received before now minus --older-than. What rebuild needs to start "
        "from is kept first (each pruned recording's state), so `trackhook rebuild` finds "
        "what it found before. Recordings are never removed. Safe while the service runs; "
        "a stopped run is taken up by the next one (docs/OPERATIONS.md, Retention).",
        _environment(*_DATABASE, "db_statement_timeout_seconds", note=_CHECKED)
        + "\n\nexit status: 0 done; 1 the database cannot be reached, or stopped part-way "
        "(run it\nagain); 2 an argument or a setting cannot work.",
    )
    prune.add_argument(
        "--older-than",
        type=_duration,
        required=True,
        metavar="AGE",
        help="remove what was received longer ago than this: 90d, 12h or 30m",
    )
    prune.add_argument(
        "--dry-run",
        action="store_true",
        help="count what would be removed, on a read-only connection; change nothing",
    )
    prune.add_argument(
        "--batch-size",
        type=_batch_size,
        default=BATCH_SIZE,
        help="log rows looked at per transaction",
    )
    prune.set_defaults(handler=_prune)

    verify_log = command(
        "verify-log",
        "check every logged delivery's signature again, over the body as received",
        "Check every logged delivery's signature again, over the body as received, with the "
        "configured key(s).",
        _environment(*_DATABASE, *_KEY, note=_CHECKED)
        + "\n\nexit status: 0 every signature verifies; 1 one does not, or the database or "
        "the key\nURL cannot be reached; 2 a setting or the key cannot work.",
    )
    verify_log.set_defaults(handler=_verify_log)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except Refused as refused:
        for problem in refused.problems:
            print(f"trackhook {args.command}: {' '.join(problem.splitlines())}", file=sys.stderr)
        return refused.status


if __name__ == "__main__":
    raise SystemExit(main())
