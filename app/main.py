"""The ASGI application: `create_app()` wires the layers; the lifespan owns the ledger."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sse_starlette.sse import AppStatus
from starlette.types import ASGIApp

from app.api.changes import router as changes_router
from app.api.events import router as events_router
from app.api.health import router as health_router
from app.api.metrics import LedgerGauges
from app.api.metrics import router as metrics_router
from app.api.recordings import router as recordings_router
from app.core.config import ApiAuth, ConfigurationError, Settings, SignatureMode
from app.core.http import FastJSONResponse, install_error_handlers
from app.core.logs import configure_logging
from app.core.release import release_version
from app.intake.lane import IntakeLane
from app.intake.public_key import PublicKeyProvider
from app.intake.router import INTAKE_SCHEMA_COMPONENTS
from app.intake.router import router as intake_router
from app.intake.service import WebhookIntake
from app.ledger.ledger import Ledger
from app.ledger.migrations import head_revision
from app.server.request_id import RequestId
from app.server.route_metrics import RouteMetrics
from app.server.shutdown import ShutdownGuard

logger = logging.getLogger("trackhook")

DRAIN_POLL_SECONDS = 0.1


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; settings are read when it starts, not at import."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        active = settings if settings is not None else Settings()
        if problems := active.serving_problems():
            raise ConfigurationError("; ".join(problems))
        configure_logging(active.log_level, active.log_format, access_log=active.access_log)
        key_provider = PublicKeyProvider(active)
        if active.webhook_signature is SignatureMode.OFF:
            logger.warning(
                "WEBHOOK_SIGNATURE=off: webhooks are accepted WITHOUT signature checks; "
                "use this only for local development"
            )
        else:
            logger.info("webhook signatures verified with the key from %s", key_provider.source)
        if active.api_auth is ApiAuth.OFF:
            logger.warning(
                "API_AUTH=off: /v1 answers anyone who can reach it, with every payload and "
                "file URL; use this only for local development"
            )
        if not active.api_docs:
            _remove_docs(app)
        ledger = Ledger(active)
        app.state.settings = active
        app.state.ledger = ledger
        app.state.migration_head = head_revision()
        app.state.intake = WebhookIntake(ledger, key_provider, active)
        gauges = LedgerGauges(ledger, active.metrics_cache_seconds, active.stuck_after_seconds)
        app.state.metrics = gauges
        if active.metrics_token is None:
            logger.info("METRICS_TOKEN is unset: /metrics is not served")
        ledger.start()
        gauges.start()
        draining = asyncio.create_task(_close_when_draining(ledger))
        logger.info("database: %s", ledger.engine.url.render_as_string(hide_password=True))
        # The ~120k objects built so far (FastAPI, pydantic, SQLAlchemy) live as long as the
        # process; left in the collector's care, every full collection walks them all
        # (~35 ms, a latency spike for whatever request is in flight).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            # Lifespan shutdown comes after uvicorn has drained the in-flight requests.
            draining.cancel()
            await gauges.stop()
            await ledger.close()

    app = FastAPI(
        title="trackhook",
        summary="Receiver for VideoSDK participant-track-recording webhooks",
        version=release_version(),
        lifespan=lifespan,
        default_response_class=FastJSONResponse,
        # A path is served or it is a 404, never redirected: a webhook sender does not
        # follow a 307 (`POST /webhooks/videosdk/` is the intake lane's too).
        redirect_slashes=False,
        # No OpenTelemetry here: without this FastAPI looks the providers up per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    # Inside the lane: what FastAPI routes, by route (the lane counts its own POSTs).
    app.add_middleware(RouteMetrics)
    app.add_middleware(IntakeLane)
    # Around the lane: from SIGTERM on, new requests get a 503 (app.server.shutdown).
    app.add_middleware(ShutdownGuard)
    # Around everything: every answer carries the request id, 503s and 500s included.
    _outermost(app, RequestId)
    install_error_handlers(app)
    _document_intake_models(app)
    app.include_router(intake_router)
    app.include_router(recordings_router)
    app.include_router(changes_router)
    app.include_router(events_router)
    app.include_router(health_router)
    app.include_router(metrics_router)
    return app


async def _close_when_draining(ledger: Ledger) -> None:
    """Once the server has been told to stop, nobody waits on the change feed any more:
    long-polls answer and streams end at once, instead of holding the shutdown up.

    uvicorn has no shutdown hook for the app before it drains; sse-starlette patches its
    signal handling and says so in `AppStatus.should_exit`."""
    while not AppStatus.should_exit:
        await asyncio.sleep(DRAIN_POLL_SECONDS)
    ledger.watch.close()


def _outermost(app: FastAPI, middleware: Callable[[ASGIApp], ASGIApp]) -> None:
    """`middleware` around everything, Starlette's error middleware included (whose 500s
    `add_middleware` cannot reach)."""
    build = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        return middleware(build())

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]


def _remove_docs(app: FastAPI) -> None:
    """API_DOCS=off: /docs, /redoc and /openapi.json answer 404."""
    docs = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    app.router.routes = [
        route for route in app.router.routes if getattr(route, "path", None) not in docs
    ]


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
