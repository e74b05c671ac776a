"""The framework's own ceiling: a plain FastAPI app whose POST endpoint parses the same
JSON body the intake gets and answers a small JSON document. No database, no signature.

Served with exactly the uvicorn settings of the service, and driven by the same script.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, FastAPI

app = FastAPI(title="bare")


@app.post("/webhooks/videosdk")
async def receive(payload: Annotated[dict[str, Any], Body()]) -> dict[str, str | None]:
    return {"status": "applied", "eventId": "1", "webhookType": str(payload.get("webhookType"))}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
