"""Query-parameter types shared by the list endpoints."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query
from pydantic import AfterValidator

from app.core.text import Identifier


def as_utc(moment: datetime) -> datetime:
    """Naive means UTC; an aware time is converted, and one UTC cannot hold is refused."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is outside the range UTC can represent") from None


# No stored id is longer than ID_MAX_LENGTH, so a longer filter is a client error.
FilterValue = Annotated[Identifier | None, Query()]
UtcDateTime = Annotated[datetime, AfterValidator(as_utc)]
