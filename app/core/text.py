"""String rules shared by payload validation and query parameters."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, StringConstraints

ID_MAX_LENGTH = 255


def reject_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it at validation rather than fail in the driver.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Constraints first, so a too-long or empty value is reported as such.
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=ID_MAX_LENGTH), AfterValidator(reject_nul)
]
