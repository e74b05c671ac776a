"""Query-parameter types shared by the list endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from app.core.text import NulFreeStr
from app.recordings.models import ID_MAX_LENGTH

# No stored id is longer than ID_MAX_LENGTH, so a longer filter is a client error.
FilterValue = Annotated[NulFreeStr | None, Query(min_length=1, max_length=ID_MAX_LENGTH)]
