"""Requests routed by FastAPI (the query API, the probes, /metrics, the docs), counted and
timed by the route that served them.

The label is the route's template (`/v1/recordings/{recording_id}`), which routing leaves in
the scope, never the path itself: a label per id would grow without end. A path no route
knows is `unmatched`, and a method outside HTTP's usual ones is `other`, for the same
reason. Inside the intake lane (app.main), which answers its POSTs itself and counts them.
"""

from __future__ import annotations

import asyncio
from time import perf_counter

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import metrics

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RouteMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        status = 500  # an exception, with nothing sent: the server's error middleware's 500
        answered_at: float | None = None

        async def timed(message: Message) -> None:
            nonlocal status, answered_at
            if message["type"] == "http.response.start":
                status = message["status"]
                answered_at = perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, timed)
        except asyncio.CancelledError:
            if answered_at is None:
                status = 503  # cancelled at the shutdown deadline: the guard answers 503
            raise
        finally:
            route = getattr(scope.get("route"), "path", None)
            template = route if isinstance(route, str) else UNMATCHED
            method = scope["method"] if scope["method"] in METHODS else "other"
            seconds = (answered_at or perf_counter()) - started
            key = (template, method, status)
            counter, histogram = self._children.get(key) or self._bind(key)
            counter.inc()
            histogram.observe(seconds)

    def _bind(self, key: tuple[str, str, int]) -> tuple[Counter, Histogram]:
        """Bound once per (route, method, status): `labels()` costs more than the count."""
        template, method, status = key
        children = (
            metrics.API_REQUESTS.labels(template, method, str(status)),
            metrics.API_SECONDS.labels(template),
        )
        self._children[key] = children
        return children
