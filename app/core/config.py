"""Service settings, read from the environment (see README, "Settings")."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./trackhook.db"
DEFAULT_PUBLIC_KEY_URL = "https://api.videosdk.live/v2/public/rsa-public-key"


class SignatureMode(StrEnum):
    REQUIRED = "required"
    OFF = "off"


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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    database_url: str = DEFAULT_DATABASE_URL
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0)

    webhook_signature: SignatureMode = SignatureMode.REQUIRED
    videosdk_public_key: SecretStr | None = None
    videosdk_public_key_file: Path | None = None
    videosdk_public_key_url: str = DEFAULT_PUBLIC_KEY_URL
    public_key_fetch_timeout_seconds: float = Field(default=5.0, gt=0)

    # PostgreSQL: webhooks arriving together share one read, one write and one commit.
    group_commit: bool = True
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    retry_after_seconds: int = Field(default=5, ge=1)
    api_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    log_level: str = "INFO"

    @field_validator("database_url")
    @classmethod
    def _normalise_url(cls, value: str) -> str:
        return normalise_database_url(value)

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return [token.strip() for token in value.split(",") if token.strip()]
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
