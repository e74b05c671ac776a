"""Start-up that fails fast and clearly (issue 11, item 4): every setting, the key and the log
level are checked before anything touches the database, each problem is one line naming its
variable (exit 2); an unreachable database is one line (exit 1); the command line refuses
what it cannot honour; `--version`; `--help` shows defaults and the variables read."""

from __future__ import annotations

import re
import socket
from importlib.metadata import version
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from app.cli import main
from app.core.config import Settings
from app.main import create_app
from app.server.settings import ServingSettings
from tests.commands.running import SETTING_VARIABLES, clean_env, trackhook
from tests.conftest import note_tested, reachable_postgres_admin
from tests.support.databases import create_postgres_database, drop_postgres_database
from tests.support.signing import Signer

DATABASE_COMMANDS = ("serve", "migrate", "rebuild", "verify-log")
KEYED_COMMANDS = ("serve", "verify-log")


@pytest.fixture(scope="module")
def public_pem() -> str:
    return Signer.generate().public_pem


def refused_lines(stderr: str, command: str) -> list[str]:
    """Each line of stderr, checked to be one of the command's one-line problems."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert lines, "nothing was said"
    for line in lines:
        assert line.startswith(f"trackhook {command}: "), stderr
    return lines


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens on it once the socket is closed


# Each case: the environment, then what its line must say (and what it must not).
BAD_SETTINGS = {
    "log level": ({"LOG_LEVEL": "verbose"}, ["LOG_LEVEL=verbose", "DEBUG", "WARNING"]),
    "pool size": ({"DB_POOL_SIZE": "0"}, ["DB_POOL_SIZE=0", "greater than or equal to 1"]),
    "signature mode": ({"WEBHOOK_SIGNATURE": "maybe"}, ["WEBHOOK_SIGNATURE=maybe", "'off'"]),
    "key url": ({"VIDEOSDK_PUBLIC_KEY_URL": "api.videosdk.live/key"}, ["VIDEOSDK_PUBLIC_KEY_URL"]),
}


@pytest.mark.parametrize("command", DATABASE_COMMANDS)
@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_a_bad_setting_is_one_line_before_the_database(
    command: str, case: str, tmp_path: Path, public_pem: str
) -> None:
    database = tmp_path / "never-created.db"
    values, expected = BAD_SETTINGS[case]
    env = clean_env(
        DATABASE_URL=f"sqlite:///{database}",
        VIDEOSDK_PUBLIC_KEY=public_pem,
        API_AUTH="off",
        **values,
    )
    done = trackhook(command, env=env)
    assert done.returncode == 2, done.stderr
    (line,) = refused_lines(done.stderr, command)
    for text in expected:
        assert text in line
    assert not database.exists()


@pytest.mark.parametrize("command", DATABASE_COMMANDS)
def test_an_unsupported_database_says_which_are(command: str, public_pem: str) -> None:
    env = clean_env(
        DATABASE_URL="mysql://app:hunter2@db:3306/trackhook",
        VIDEOSDK_PUBLIC_KEY=public_pem,
        API_AUTH="off",
    )
    done = trackhook(command, env=env)
    assert done.returncode == 2, done.stderr
    (line,) = refused_lines(done.stderr, command)
    assert "DATABASE_URL" in line and "'mysql'" in line
    assert "postgresql://" in line and "sqlite://" in line
    assert "hunter2" not in done.stderr  # a URL's password is never repeated


def test_the_database_url_from_a_file_is_checked_too(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text("mysql://app:hunter2@db/trackhook\n")
    done = trackhook("migrate", env=clean_env(DATABASE_URL_FILE=str(secret)))
    assert done.returncode == 2, done.stderr
    (line,) = refused_lines(done.stderr, "migrate")
    assert f"DATABASE_URL_FILE={secret}" in line and "'mysql'" in line
    assert "hunter2" not in done.stderr


def key_cases(tmp_path: Path) -> dict[str, tuple[dict[str, str], list[str]]]:
    private = tmp_path / "private.pem"
    private.write_text("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    missing = tmp_path / "missing.pem"
    return {
        "missing file": (
            {"VIDEOSDK_PUBLIC_KEY_FILE": str(missing)},
            [f"VIDEOSDK_PUBLIC_KEY_FILE={missing}", "No such file or directory"],
        ),
        "a directory": (
            {"VIDEOSDK_PUBLIC_KEY_FILE": str(tmp_path)},
            [f"VIDEOSDK_PUBLIC_KEY_FILE={tmp_path}", "Is a directory"],
        ),
        "private key in the file": (
            {"VIDEOSDK_PUBLIC_KEY_FILE": str(private)},
            [f"VIDEOSDK_PUBLIC_KEY_FILE={private}", "PRIVATE KEY block is not a public key"],
        ),
        "empty file": (
            {"VIDEOSDK_PUBLIC_KEY_FILE": str(empty)},
            [f"VIDEOSDK_PUBLIC_KEY_FILE={empty}", "no PEM public key"],
        ),
        "no PEM in the variable": (
            {"VIDEOSDK_PUBLIC_KEY": "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"},
            ["VIDEOSDK_PUBLIC_KEY:", "no PEM public key"],
        ),
    }


@pytest.mark.parametrize("command", KEYED_COMMANDS)
@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "a directory",
        "private key in the file",
        "empty file",
        "no PEM in the variable",
    ],
)
def test_the_key_is_checked_before_the_database(command: str, case: str, tmp_path: Path) -> None:
    database = tmp_path / "never-created.db"
    values, expected = key_cases(tmp_path)[case]
    env = clean_env(DATABASE_URL=f"sqlite:///{database}", API_AUTH="off", **values)
    done = trackhook(command, env=env)
    assert done.returncode == 2, done.stderr
    (line,) = refused_lines(done.stderr, command)
    for text in expected:
        assert text in line
    assert not database.exists()


def test_migrate_needs_no_key(tmp_path: Path) -> None:
    """The migration step is given the database, not the webhook key (docker-compose.yml)."""
    database = tmp_path / "trackhook.db"
    env = clean_env(
        DATABASE_URL=f"sqlite:///{database}",
        VIDEOSDK_PUBLIC_KEY_FILE=str(tmp_path / "missing.pem"),
    )
    done = trackhook("migrate", env=env)
    assert done.returncode == 0, done.stderr
    assert database.exists()


def test_every_problem_is_its_own_line(tmp_path: Path) -> None:
    database = tmp_path / "never-created.db"
    env = clean_env(
        DATABASE_URL=f"sqlite:///{database}",
        VIDEOSDK_PUBLIC_KEY_FILE=str(tmp_path / "missing.pem"),
        GRACEFUL_TIMEOUT_SECONDS="0",
    )
    done = trackhook("serve", env=env)  # and no API_TOKENS, with API_AUTH=required
    assert done.returncode == 2, done.stderr
    lines = refused_lines(done.stderr, "serve")
    assert len(lines) == 3, lines
    assert any("API_AUTH=required" in line for line in lines)
    assert any("VIDEOSDK_PUBLIC_KEY_FILE=" in line for line in lines)
    assert any("GRACEFUL_TIMEOUT_SECONDS=0" in line for line in lines)
    assert not database.exists()

    env = clean_env(DATABASE_URL=f"sqlite:///{database}", LOG_LEVEL="loud", DB_POOL_SIZE="x")
    done = trackhook("migrate", env=env)
    assert done.returncode == 2, done.stderr
    lines = refused_lines(done.stderr, "migrate")
    assert [line.split(":")[1].split("=")[0].strip() for line in lines] == [
        "DB_POOL_SIZE",
        "LOG_LEVEL",
    ]
    assert not database.exists()


def arguments(command: str) -> list[str]:
    """The command, and for serve a port nobody uses (it must fail before listening)."""
    return [command, "--port", str(closed_port())] if command == "serve" else [command]


@pytest.mark.parametrize("command", DATABASE_COMMANDS)
def test_an_unreachable_postgres_is_one_line(command: str, public_pem: str) -> None:
    port = closed_port()
    env = clean_env(
        DATABASE_URL=f"postgresql://postgres:hunter2@127.0.0.1:{port}/trackhook",
        VIDEOSDK_PUBLIC_KEY=public_pem,
        API_AUTH="off",
    )
    done = trackhook(*arguments(command), env=env)
    assert done.returncode == 1, done.stderr
    (line,) = refused_lines(done.stderr, command)
    assert f"127.0.0.1:{port}" in line
    assert "refused" in line.lower()
    assert "hunter2" not in done.stderr


async def test_a_missing_database_is_one_line(public_pem: str) -> None:
    admin = await reachable_postgres_admin()
    note_tested("postgresql")
    url = make_url(admin).set(database="trackhook_never_created").render_as_string(False)
    server = make_url(admin)
    for command in ("migrate", "serve"):
        env = clean_env(DATABASE_URL=url, API_AUTH="off", VIDEOSDK_PUBLIC_KEY=public_pem)
        done = trackhook(*arguments(command), env=env)
        assert done.returncode == 1, done.stderr
        (line,) = refused_lines(done.stderr, command)
        assert f"{server.host}:{server.port or 5432}" in line
        assert 'database "trackhook_never_created" does not exist' in line


# The commands that work on the tables: on a schema never migrated (or one an older
# release left) each says so in one line before it starts, and names the command to run.
SCHEMA_COMMANDS = {
    "rebuild": ["rebuild"],
    "prune": ["prune", "--older-than", "30d", "--dry-run"],
    "verify-log": ["verify-log"],
}


@pytest.mark.parametrize("command", sorted(SCHEMA_COMMANDS))
async def test_an_unmigrated_postgres_database_is_one_line(command: str, public_pem: str) -> None:
    admin = await reachable_postgres_admin()
    note_tested("postgresql")
    url = await create_postgres_database(admin)
    try:
        env = clean_env(DATABASE_URL=url, API_AUTH="off", VIDEOSDK_PUBLIC_KEY=public_pem)
        done = trackhook(*SCHEMA_COMMANDS[command], env=env)
    finally:
        await drop_postgres_database(admin, url)
    assert done.returncode == 1, done.stderr
    (line,) = refused_lines(done.stderr, command)
    assert "has not been migrated" in line and "trackhook migrate" in line, line


@pytest.mark.parametrize("command", sorted(SCHEMA_COMMANDS))
@pytest.mark.parametrize("exists", [True, False], ids=["empty file", "no file"])
def test_an_unmigrated_sqlite_database_is_one_line(
    command: str, exists: bool, public_pem: str, tmp_path: Path
) -> None:
    database = tmp_path / "trackhook.db"
    if exists:
        database.touch()
    env = clean_env(
        DATABASE_URL=f"sqlite:///{database}", API_AUTH="off", VIDEOSDK_PUBLIC_KEY=public_pem
    )
    done = trackhook(*SCHEMA_COMMANDS[command], env=env)
    assert done.returncode == 1, done.stderr
    (line,) = refused_lines(done.stderr, command)
    assert "has not been migrated" in line and "trackhook migrate" in line, line
    assert database.exists() == exists  # a missing file is not created by asking


def test_an_unopenable_sqlite_file_is_one_line(tmp_path: Path) -> None:
    database = tmp_path / "no-such-directory" / "trackhook.db"
    done = trackhook("migrate", env=clean_env(DATABASE_URL=f"sqlite:///{database}"))
    assert done.returncode == 1, done.stderr
    (line,) = refused_lines(done.stderr, "migrate")
    assert str(database) in line and "No such file or directory" in line


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--port", "99999", "1..65535"),
        ("--port", "0", "1..65535"),
        ("--port", "http", "not a whole number"),
        ("--workers", "0", "at least 1"),
        ("--graceful-timeout", "0", "at least 1"),
    ],
)
def test_serve_refuses_what_it_cannot_honour(
    option: str, value: str, says: str, tmp_path: Path
) -> None:
    database = tmp_path / "never-created.db"
    env = clean_env(DATABASE_URL=f"sqlite:///{database}", API_AUTH="off")
    done = trackhook("serve", option, value, env=env)
    assert done.returncode == 2, done.stderr
    assert f"argument {option}" in done.stderr and says in done.stderr
    assert "Traceback" not in done.stderr
    assert not database.exists()


def test_version() -> None:
    done = trackhook("--version", env=clean_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"trackhook {version('trackhook')}"


def test_the_openapi_document_names_the_installed_version(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'a.db'}",
        videosdk_public_key=Signer.generate().public_pem,
        api_auth="off",
    )
    assert create_app(settings).openapi()["info"]["version"] == version("trackhook")


def help_of(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def variables_listed(text: str) -> set[str]:
    """The names in the help's environment block."""
    block = text.split("environment variables", 1)[1]
    return set(re.findall(r"^  ([A-Z][A-Z0-9_]+) ", block, re.MULTILINE))


def test_serve_help_shows_defaults_and_every_variable(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of("serve", capsys)
    for default in ("(default: 127.0.0.1)", "(default: 8000)", "(default: 1)", "(default: info)"):
        assert default in text, text
    listed = variables_listed(text)
    every = {name.upper() for model in (Settings, ServingSettings) for name in model.model_fields}
    assert every <= listed, every - listed
    assert "sqlite+aiosqlite:///./trackhook.db" in text  # the variables' defaults too


@pytest.mark.parametrize(
    ("command", "reads"),
    [
        ("migrate", {"DATABASE_URL", "DATABASE_URL_FILE", "DB_CONNECT_TIMEOUT_SECONDS"}),
        ("rebuild", {"DATABASE_URL", "DATABASE_URL_FILE", "DB_CONNECT_TIMEOUT_SECONDS"}),
        (
            "verify-log",
            {
                "DATABASE_URL",
                "VIDEOSDK_PUBLIC_KEY",
                "VIDEOSDK_PUBLIC_KEY_FILE",
                "VIDEOSDK_PUBLIC_KEY_URL",
            },
        ),
    ],
)
def test_each_command_lists_the_variables_it_reads(
    command: str, reads: set[str], capsys: pytest.CaptureFixture[str]
) -> None:
    listed = variables_listed(help_of(command, capsys))
    assert reads <= listed
    assert listed <= SETTING_VARIABLES, listed - SETTING_VARIABLES


def test_keygen_and_sign_show_their_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert "(default: dev-private.pem)" in help_of("keygen", capsys)
    assert "(default: dev-private.pem)" in help_of("sign", capsys)
