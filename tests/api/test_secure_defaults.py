"""Secure by default (issue 10, item 9): /v1 needs a token unless API_AUTH=off is set on
purpose; empty tokens are refused; secrets can come from files; /docs has a switch."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from app.core.config import ConfigurationError, Settings
from app.main import create_app
from tests.support.signing import Signer

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def settings(database_url: str, signer: Signer, **values: Any) -> Settings:
    return Settings(
        database_url=database_url, videosdk_public_key=SecretStr(signer.public_pem), **values
    )


async def started(app_settings: Settings) -> tuple[Any, httpx.AsyncClient]:
    app = create_app(app_settings)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    return lifespan, http


async def test_without_tokens_the_service_does_not_start(database_url: str, signer: Signer) -> None:
    app = create_app(settings(database_url, signer))
    with pytest.raises(ConfigurationError, match="API_AUTH=required"):
        async with app.router.lifespan_context(app):
            pass


def test_serve_without_tokens_says_so_before_touching_the_database(tmp_path: Path) -> None:
    database = tmp_path / "never-created.db"
    script = Path(sys.executable).parent / "trackhook"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(("API_", "DATABASE_URL"))
    }
    done = subprocess.run(
        [str(script), "serve", "--port", "8999"],
        cwd=PROJECT_ROOT,
        env={**env, "DATABASE_URL": f"sqlite:///{database}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "API_AUTH=required (the default) needs at least one token" in done.stderr
    assert not database.exists()  # nothing was migrated


@pytest.mark.parametrize("tokens", [" , ", "a,,b", "a,", ",a"])
def test_an_empty_token_is_refused(tokens: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKENS", tokens)
    with pytest.raises(ValidationError, match="empty token"):
        Settings()


def test_tokens_and_the_database_url_can_come_from_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tokens").write_text("first\nsecond, third\n\n")
    (tmp_path / "url").write_text("postgresql://u:p@db:5432/trackhook\n")
    monkeypatch.setenv("API_TOKENS_FILE", str(tmp_path / "tokens"))
    monkeypatch.setenv("DATABASE_URL_FILE", str(tmp_path / "url"))
    loaded = Settings()
    assert [token.get_secret_value() for token in loaded.api_tokens] == [
        "first",
        "second",
        "third",
    ]
    assert loaded.database_url == "postgresql+asyncpg://u:p@db:5432/trackhook"
    assert loaded.serving_problems() == []


def test_a_secret_from_a_file_and_the_environment_at_once_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "url").write_text("sqlite:///x.db")
    monkeypatch.setenv("DATABASE_URL_FILE", str(tmp_path / "url"))
    monkeypatch.setenv("DATABASE_URL", "sqlite:///y.db")
    with pytest.raises(ValidationError, match="not both"):
        Settings()
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("DATABASE_URL_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match="DATABASE_URL_FILE"):
        Settings()


async def test_api_auth_off_opens_v1_and_says_so(
    database_url: str, signer: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="trackhook"):
        lifespan, http = await started(settings(database_url, signer, api_auth="off"))
    try:
        assert (await http.get("/v1/recordings")).status_code == 200
    finally:
        await http.aclose()
        await lifespan.__aexit__(None, None, None)
    assert any("API_AUTH=off" in record.getMessage() for record in caplog.records)


async def test_with_tokens_v1_needs_one(database_url: str, signer: Signer) -> None:
    lifespan, http = await started(settings(database_url, signer, api_tokens="s3cret"))
    try:
        refused = await http.get("/v1/recordings")
        granted = await http.get("/v1/recordings", headers={"Authorization": "Bearer s3cret"})
    finally:
        await http.aclose()
        await lifespan.__aexit__(None, None, None)
    assert refused.status_code == 401 and refused.json()["error"] == "missing_token"
    assert granted.status_code == 200


@pytest.mark.parametrize("docs", [True, False])
async def test_the_docs_have_a_switch(database_url: str, signer: Signer, docs: bool) -> None:
    lifespan, http = await started(settings(database_url, signer, api_auth="off", api_docs=docs))
    try:
        answers = [(await http.get(path)).status_code for path in ("/docs", "/openapi.json")]
    finally:
        await http.aclose()
        await lifespan.__aexit__(None, None, None)
    assert answers == ([200, 200] if docs else [404, 404])
