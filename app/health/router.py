"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Literal

from alembic.runtime.migration import MigrationContext
from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import Connection

from app.core.context import ContextDep
from app.core.errors import ErrorBody, ServiceUnavailable, is_database_unavailable

router = APIRouter(tags=["health"])


def current_revision(connection: Connection) -> str | None:
    """Alembic's own reading of the schema version; None when never migrated."""
    return MigrationContext.configure(connection).get_current_revision()


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    database: str
    migration: str


@router.get("/healthz", response_model=Health)
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
async def readyz(context: ContextDep) -> Readiness:
    retry = context.settings.retry_after_seconds
    try:
        async with context.engine.connect() as connection:
            current = await connection.run_sync(current_revision)
    except Exception as exc:
        if not is_database_unavailable(exc):
            raise
        raise ServiceUnavailable(
            "the database cannot be reached", error="database_unavailable", retry_after=retry
        ) from None
    if current is None or current != context.migration_head:
        raise ServiceUnavailable(
            f"the schema is at {current!r}, the code expects {context.migration_head!r} "
            "(run `trackhook migrate`)",
            error="schema_not_migrated",
            retry_after=retry,
        )
    return Readiness(status="ready", database=context.engine.dialect.name, migration=current)
