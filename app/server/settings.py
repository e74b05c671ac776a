"""The server's settings, read from the environment (see README, "Settings").

Apart from the app's `Settings`: the server reads them before any app exists (the command
line, the protocol of every connection in every worker), and the app only needs the
graceful timeout, which `trackhook serve` exports for it."""

from __future__ import annotations

from functools import cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

GRACEFUL_TIMEOUT_ENV = "GRACEFUL_TIMEOUT_SECONDS"
DEFAULT_GRACEFUL_TIMEOUT = 30


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    graceful_timeout_seconds: int = Field(default=DEFAULT_GRACEFUL_TIMEOUT, ge=1)
    request_read_timeout_seconds: float = Field(default=10.0, gt=0)
    keep_alive_timeout_seconds: int = Field(default=5, ge=1)


@cache
def serving_settings() -> ServingSettings:
    """Once per process (each worker reads the environment it inherited)."""
    return ServingSettings()
