"""What the lifespan builds once per process, and typed access to it from requests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.config import Settings


@dataclass(frozen=True, slots=True)
class AppContext:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    migration_head: str | None


def get_context(request: Request) -> AppContext:
    context = request.app.state.context
    assert isinstance(context, AppContext), "the lifespan has not run"
    return context


async def _context_dependency(request: Request) -> AppContext:
    # async so FastAPI calls it inline; a plain `def` dependency costs a thread hop.
    return get_context(request)


ContextDep = Annotated[AppContext, Depends(_context_dependency)]
