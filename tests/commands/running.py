"""Run the installed `trackhook` command as an operator would, in an environment that holds
none of the service's settings unless the test gives them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from app.core.config import Settings
from app.server.settings import ServingSettings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TRACKHOOK = Path(sys.executable).parent / "trackhook"

# Every variable a setting is read from, and its `_FILE` twin.
SETTING_VARIABLES = frozenset(
    name.upper() for model in (Settings, ServingSettings) for name in model.model_fields
) | {"DATABASE_URL_FILE", "API_TOKENS_FILE", "VIDEOSDK_PUBLIC_KEY_FILE"}


def clean_env(**values: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key.upper() not in SETTING_VARIABLES}
    env.update(values)
    return env


def command(*args: str) -> list[str]:
    return [str(TRACKHOOK), *args]


def trackhook(
    *args: str, env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args),
        cwd=PROJECT_ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
