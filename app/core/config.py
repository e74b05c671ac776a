"""Service settings, read from the environment (see README, "Settings")."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./trackhook.db"
DEFAULT_PUBLIC_KEY_URL = "https://api.videosdk.live/v2/public/rsa-public-key"
DEFAULT_RETRY_AFTER = 5
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
# The schemes DATABASE_URL may have; the plain ones get the async driver.
DATABASE_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg", "sqlite", "sqlite+aiosqlite")
SUPPORTED_DATABASES = (
    "use postgresql://user:password@host:5432/database (or postgres://, postgresql+asyncpg://) "
    "or sqlite:///path/to/file.db (or sqlite+aiosqlite://)"
)
# Settings whose values a problem never repeats: they hold, or may hold, a secret.
SECRET_SETTINGS = frozenset({"database_url", "api_tokens", "videosdk_public_key", "metrics_token"})


class SignatureMode(StrEnum):
    REQUIRED = "required"
    OFF = "off"


class ApiAuth(StrEnum):
    REQUIRED = "required"  # every /v1 request needs one of API_TOKENS
    OFF = "off"  # /v1 is open to anyone who reaches it: for local development only


class LogFormat(StrEnum):
    TEXT = "text"  # one readable line: for development
    JSON = "json"  # one JSON object per line (app.core.logs)


class ConfigurationError(Exception):
    """The settings cannot run the service; the message says which and what to do."""


def normalise_database_url(url: str) -> str:
    """Pick the async driver for plain URLs, so `postgresql://...` works as users expect."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


def checked_database_url(url: str) -> str:
    """The URL with its async driver; ValueError when the service cannot use it (the message
    never repeats the URL, which may hold a password)."""
    scheme, separator, _ = url.strip().partition("://")
    if not separator:
        raise ValueError(f"not a database URL; {SUPPORTED_DATABASES}")
    if scheme.lower() not in DATABASE_SCHEMES:
        raise ValueError(f"the scheme '{scheme}' is not supported; {SUPPORTED_DATABASES}")
    normalised = normalise_database_url(scheme.lower() + url.strip()[len(scheme) :])
    try:
        port = make_url(normalised).port
    except (ArgumentError, ValueError):
        raise ValueError("cannot be read as user:password@host:port/database") from None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"the port {port} is not in 1..65535")
    return normalised


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    database_url: str = DEFAULT_DATABASE_URL
    database_url_file: Path | None = None  # a container secret holding DATABASE_URL
    # Intake's connections; reads (the /v1 API, the change feed's watch) have their own, so
    # a flood of reads can never take a connection a webhook needs.
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_read_pool_size: int = Field(default=5, ge=1, le=200)
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    # Every database wait is bounded: a write statement (lock waits included), a read.
    # Past the bound the request gets a 503 with Retry-After (VideoSDK delivers again).
    db_statement_timeout_seconds: float = Field(default=5.0, gt=0, le=600)
    db_read_timeout_seconds: float = Field(default=2.0, gt=0, le=600)

    webhook_signature: SignatureMode = SignatureMode.REQUIRED
    videosdk_public_key: SecretStr | None = None
    videosdk_public_key_file: Path | None = None
    videosdk_public_key_url: str = DEFAULT_PUBLIC_KEY_URL
    public_key_fetch_timeout_seconds: float = Field(default=5.0, gt=0)
    # A fetched key is fetched again once older than this (a rotation is picked up sooner,
    # on the first signature that fails); it bounds how long a key VideoSDK withdrew verifies.
    videosdk_public_key_ttl_seconds: int = Field(default=3600, ge=60)

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # A signed delivery may carry many files, but not without end: beyond these, a 422.
    max_files_per_delivery: int = Field(default=100, ge=1, le=10_000)
    max_files_per_recording: int = Field(default=1000, ge=1, le=100_000)
    retry_after_seconds: int = Field(default=DEFAULT_RETRY_AFTER, ge=1)
    # A recording not finished that received nothing for this long is stuck.
    stuck_after_seconds: int = Field(default=6 * 3600, ge=60)
    api_auth: ApiAuth = ApiAuth.REQUIRED
    api_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    api_tokens_file: Path | None = None  # tokens, one per line or comma-separated
    api_docs: bool = True  # /docs, /redoc and /openapi.json
    # GET /metrics needs this bearer token (its own: API tokens are not accepted there, nor
    # it on /v1); unset, /metrics is not served.
    metrics_token: SecretStr | None = None
    metrics_token_file: Path | None = None
    # The gauges read from the database are read again at most this often, per process.
    metrics_cache_seconds: float = Field(default=15.0, ge=1, le=300)
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.TEXT
    access_log: bool = True  # uvicorn's line per answer

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        return checked_database_url(value)

    @field_validator("log_level")
    @classmethod
    def _logging_level(cls, value: str) -> str:
        if value.strip().upper() not in LOG_LEVELS:
            raise ValueError(f"not a logging level; use one of {', '.join(LOG_LEVELS)}")
        return value.strip().upper()

    @field_validator("videosdk_public_key_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.lower().startswith(("https://", "http://")):
            raise ValueError("must be an https:// (or http://) URL")
        return value

    @field_validator(
        "database_url_file",
        "api_tokens_file",
        "videosdk_public_key_file",
        "metrics_token_file",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `X_FILE=` in an environment means "no file", not the current directory.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _empty_token_is_unset(cls, value: object) -> object:
        return _metrics_token(value, "METRICS_TOKEN") if isinstance(value, str) else value

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        return _tokens(value, "API_TOKENS") if isinstance(value, str) else value

    @model_validator(mode="after")
    def _read_files(self) -> Settings:
        """DATABASE_URL_FILE and API_TOKENS_FILE, for container secrets."""
        if self.database_url_file is not None:
            if "database_url" in self.model_fields_set:
                raise ValueError("set DATABASE_URL or DATABASE_URL_FILE, not both")
            url = _read(self.database_url_file, "DATABASE_URL_FILE").strip()
            try:
                self.database_url = checked_database_url(url)
            except ValueError as exc:
                raise ValueError(f"DATABASE_URL_FILE={self.database_url_file}: {exc}") from None
        if self.api_tokens_file is not None:
            if self.api_tokens:
                raise ValueError("set API_TOKENS or API_TOKENS_FILE, not both")
            lines = _read(self.api_tokens_file, "API_TOKENS_FILE").replace(",", "\n")
            text = ",".join(line.strip() for line in lines.splitlines() if line.strip())
            self.api_tokens = [SecretStr(token) for token in _tokens(text, "API_TOKENS_FILE")]
        if self.metrics_token_file is not None:
            if self.metrics_token is not None:
                raise ValueError("set METRICS_TOKEN or METRICS_TOKEN_FILE, not both")
            token = _read(self.metrics_token_file, "METRICS_TOKEN_FILE")
            value = _metrics_token(token, "METRICS_TOKEN_FILE")
            if value is None:
                raise ValueError(f"METRICS_TOKEN_FILE={self.metrics_token_file}: holds no token")
            self.metrics_token = SecretStr(value)
        return self

    def serving_problems(self) -> list[str]:
        """What stops these settings from serving (empty when they can): checked before
        anything touches the database."""
        if self.api_auth is ApiAuth.REQUIRED and not self.api_tokens:
            return [
                "API_AUTH=required (the default) needs at least one token: set API_TOKENS "
                "or API_TOKENS_FILE, or API_AUTH=off to serve /v1 to anyone (development only)"
            ]
        return []

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def validation_problems(error: ValidationError) -> list[str]:
    """One line per problem with the settings, each naming the environment variable it
    comes from (and its value, unless it may hold a secret)."""
    problems = []
    for item in error.errors(include_url=False):
        message = str(item["msg"]).removeprefix("Value error, ")
        if not item["loc"]:  # a check across settings: its message names them
            problems.append(message)
            continue
        field = str(item["loc"][0])
        value = item.get("input")
        if field in SECRET_SETTINGS or not isinstance(value, str | int | float):
            problems.append(f"{field.upper()}: {message}")
        else:
            problems.append(f"{field.upper()}={str(value)[:80]}: {message}")
    return problems


def _tokens(text: str, name: str) -> list[str]:
    """Comma-separated tokens; an empty one (`a,,b`, `" , "`) is refused, not skipped."""
    if not text.strip():
        return []
    tokens = [token.strip() for token in text.split(",")]
    if not all(tokens):
        raise ValueError(f"{name} holds an empty token (between or around its commas)")
    return tokens


def _metrics_token(text: str, name: str) -> str | None:
    """One token, surrounding blanks ignored; empty is unset. A blank inside it could never
    come back whole in an Authorization header: refused."""
    token = text.strip()
    if any(character.isspace() for character in token):
        raise ValueError(f"{name} holds a blank (a space, tab or line break) inside the token")
    return token or None


def _read(path: Path, name: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ValueError(f"{name}={path}: {exc.strerror or exc}") from None
