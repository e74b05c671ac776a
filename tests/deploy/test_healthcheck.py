"""The image's HEALTHCHECK script probes the address the server was started with."""

from __future__ import annotations

import importlib.util
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType

import pytest


def _find_script() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here, *here.parents):
        if (candidate / "deploy" / "healthcheck.py").is_file():
            return candidate / "deploy" / "healthcheck.py"
    raise RuntimeError(f"no deploy/healthcheck.py above {here}")


SCRIPT = _find_script()


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = _load()
CONSOLE = "/usr/local/bin/trackhook"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # The image's CMD after `sh -c exec`, and compose's command.
        (["/usr/bin/python3", CONSOLE, "serve", "--host", "0.0.0.0", "--port", "8000"], 8000),
        (["python3", CONSOLE, "serve", "--host", "0.0.0.0", "--port", "8123"], 8123),
        (["python3", CONSOLE, "serve", "--port=8124", "--no-migrate"], 8124),
        (["python3", CONSOLE, "serve", "--po", "8125", "--workers", "2"], 8125),
        (["python3", "-m", "app.cli", "serve", "--port", "8126"], 8126),
        (["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8127"], 8127),
        # No --port: the server's own default, whatever $PORT says.
        (["python3", CONSOLE, "serve", "--host", "0.0.0.0"], 8000),
    ],
)
def test_port_comes_from_the_server_command_line(argv: list[str], expected: int) -> None:
    host, port = healthcheck.server_address([["sleep", "5"], argv], {"PORT": "9999"})
    assert (host, port) == ("127.0.0.1", expected)


@pytest.mark.parametrize(
    ("bound", "probed"),
    [
        ("0.0.0.0", "127.0.0.1"),
        ("::", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("192.0.2.10", "192.0.2.10"),
    ],
)
def test_host_is_where_the_server_can_be_reached(bound: str, probed: str) -> None:
    argv = ["python3", CONSOLE, "serve", "--host", bound]
    assert healthcheck.server_address([argv], {}) == (probed, 8000)


def test_other_trackhook_commands_are_not_servers() -> None:
    migrate = ["python3", CONSOLE, "migrate"]
    assert healthcheck.server_address([migrate], {"PORT": "8200"}) == ("127.0.0.1", 8200)
    assert healthcheck.server_address([], {}) == ("127.0.0.1", 8000)
    assert healthcheck.server_address([], {"PORT": "nonsense"}) == ("127.0.0.1", 8000)


def test_ipv6_url_is_bracketed() -> None:
    assert healthcheck.healthz_url("::1", 8000) == "http://[::1]:8000/healthz"


def test_process_table_is_read_with_pid_1_first(tmp_path: Path) -> None:
    for pid, argv in ((12, b"sh\0-c\0x\0"), (1, b"python3\0/x/trackhook\0serve\0"), (7, b"")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(argv)
    (tmp_path / "self").mkdir()
    lines = list(healthcheck.process_command_lines(tmp_path))
    assert lines == [["python3", "/x/trackhook", "serve"], ["sh", "-c", "x"]]


class _Healthz(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server_port() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), _Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_exit_status_follows_the_answer(
    server_port: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An empty process table (no `trackhook serve`), so $PORT decides; a proxy is ignored."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert healthcheck.main(tmp_path, {"PORT": str(server_port)}) == 0
    assert capsys.readouterr().out.startswith(f"healthy: http://127.0.0.1:{server_port}/healthz")
    assert healthcheck.main(tmp_path, {"PORT": str(_free_port())}) == 1
    assert capsys.readouterr().out.startswith("unhealthy:")
