"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel

from app.api.deps import ledger_of
from app.core.http import ErrorBody
from app.ledger.faults import SchemaNotMigrated
from app.ledger.migrations import is_older_than_the_code

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    database: str
    migration: str


# HEAD too, for probes that send it; left out of the schema (no body to describe).
@router.get("/healthz", response_model=Health)
@router.head("/healthz", response_model=Health, include_in_schema=False)
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={
        503: {
            "model": ErrorBody,
            "description": "Database unreachable or schema not at the latest migration",
        }
    },
)
@router.head("/readyz", response_model=Readiness, include_in_schema=False)
async def readyz(request: Request) -> Readiness:
    ledger = ledger_of(request)
    expected = request.app.state.migration_head
    current = await ledger.readiness()
    # Ready on the head, and on a newer schema (a later release migrated first, as a
    # rolling deploy does); not on an older one.
    if current is None or is_older_than_the_code(current):
        raise SchemaNotMigrated(
            f"the schema is at {current!r}, the code expects {expected!r} (run `trackhook migrate`)"
        )
    return Readiness(status="ready", database=ledger.dialect, migration=current)
