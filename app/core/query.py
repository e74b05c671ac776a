"""Query-parameter types shared by the list endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from app.core.text import Identifier

# No stored id is longer than ID_MAX_LENGTH, so a longer filter is a client error.
FilterValue = Annotated[Identifier | None, Query()]
