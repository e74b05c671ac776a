"""The quick start's first command: `make run` on a checkout with no settings serves, with
a development key pair and API token it made in ./var/, and says how to use them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.commands.running import PROJECT_ROOT, clean_env
from tests.support.server import free_port
from tests.support.signing import Signer

INSTALL_INPUTS = ("Makefile", "pyproject.toml", "requirements-dev.lock")
BODY = (
    b'{"webhookType":"participant-track-recording-starting","data":{"meetingId":"m",'
    b'"sessionId":"make-run","participantId":"p","kind":"audio"}}'
)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A directory `make run` treats as a fresh checkout that was already installed: the
    install inputs (their times kept, so the install stamp is newer) and the venv."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for name in INSTALL_INPUTS:
        shutil.copy2(PROJECT_ROOT / name, tmp_path / name)
    (tmp_path / ".venv").symlink_to(PROJECT_ROOT / ".venv")
    return tmp_path


@pytest.fixture
def make_run(checkout: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"PORT={port}"],
        cwd=checkout,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):  # the test may have stopped it
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def wait_ready(process: subprocess.Popen[str], base_url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"make run exited {process.returncode}:\n{output}")
        try:
            if httpx.get(base_url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("make run was not ready within 60 s")


def test_make_run_serves_with_a_dev_key_and_token(
    checkout: Path, make_run: tuple[subprocess.Popen[str], str]
) -> None:
    process, base_url = make_run
    wait_ready(process, base_url)
    token = (checkout / "var" / "dev-api-token").read_text().strip()
    private_key = checkout / "var" / "dev-private.pem"

    assert len(token) >= 32 and (checkout / "var" / "dev-api-token").stat().st_mode & 0o077 == 0
    signer = Signer.from_private_pem(private_key.read_bytes())
    delivered = httpx.post(
        base_url + "/webhooks/videosdk",
        content=BODY,
        headers={"content-type": "application/json", "videosdk-signature": signer.sign(BODY)},
    )
    assert delivered.status_code == 200, delivered.text
    assert httpx.get(base_url + "/v1/recordings").status_code == 401
    listed = httpx.get(base_url + "/v1/recordings", headers={"authorization": f"Bearer {token}"})
    assert listed.status_code == 200, listed.text
    assert [item["sessionId"] for item in listed.json()["items"]] == ["make-run"]

    os.killpg(process.pid, signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert "var/dev-private.pem" in output, output
    # The development token is shown, as the README's walk-through uses it.
    assert f"Authorization: Bearer {token}" in output and "var/dev-api-token" in output, output
