"""This release's version, as installed (pyproject's `version`): one source for
`trackhook --version`, the OpenAPI document and the metrics."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def release_version() -> str:
    try:
        return version("trackhook")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"
