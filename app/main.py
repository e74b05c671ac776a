"""The ASGI application: `create_app()` wires the domains; the lifespan owns the engine."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app.core.config import Settings, SignatureMode
from app.core.context import AppContext
from app.core.db import create_engine, create_session_factory
from app.core.errors import FastJSONResponse, install_error_handlers
from app.core.migrations import head_revision
from app.health.router import router as health_router
from app.recordings.router import router as recordings_router
from app.webhooks.intake_lane import IntakeLane
from app.webhooks.pg_group_commit import GroupCommitter
from app.webhooks.public_key import PublicKeyProvider
from app.webhooks.router import INTAKE_SCHEMA_COMPONENTS, events_router, intake_router
from app.webhooks.service import WebhookIntake

logger = logging.getLogger("trackhook")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; settings are read when it starts, not at import."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        active = settings if settings is not None else Settings()
        logging.basicConfig(
            level=active.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
        )
        # At DEBUG aiosqlite logs every statement with its parameters (whole payloads).
        logging.getLogger("aiosqlite").setLevel(max(logging.INFO, logging.root.level))
        key_provider = PublicKeyProvider(active)
        if active.webhook_signature is SignatureMode.OFF:
            logger.warning(
                "WEBHOOK_SIGNATURE=off: webhooks are accepted WITHOUT signature checks; "
                "use this only for local development"
            )
        else:
            logger.info("webhook signatures verified with the key from %s", key_provider.source)
        engine = create_engine(active)
        sessions = create_session_factory(engine)
        app.state.context = AppContext(active, engine, sessions, head_revision())
        group_commit = None
        if active.group_commit and engine.dialect.name == "postgresql":
            group_commit = GroupCommitter(engine)
            group_commit.start()
        app.state.intake = WebhookIntake(
            engine,
            sessions,
            key_provider,
            active.webhook_signature,
            active.retry_after_seconds,
            group_commit,
        )
        install_error_handlers(app, active.retry_after_seconds)
        logger.info("database: %s", engine.url.render_as_string(hide_password=True))
        # The ~120k objects built so far (FastAPI, pydantic, SQLAlchemy) live as long as the
        # process; left in the collector's care, every full collection walks them all
        # (~35 ms, a latency spike for whatever request is in flight).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            # Lifespan shutdown comes after uvicorn has drained the in-flight requests.
            if group_commit is not None:
                await group_commit.stop()
            await engine.dispose()

    app = FastAPI(
        title="trackhook",
        summary="Receiver for VideoSDK participant-track-recording webhooks",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=FastJSONResponse,
        # No OpenTelemetry here: without this FastAPI looks the providers up per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.add_middleware(IntakeLane)
    install_error_handlers(app, retry_after_seconds=5)
    _document_intake_models(app)
    app.include_router(intake_router)
    app.include_router(recordings_router)
    app.include_router(events_router)
    app.include_router(health_router)
    return app


def _document_intake_models(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(INTAKE_SCHEMA_COMPONENTS)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


app = create_app()
