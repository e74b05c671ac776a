"""Helpers for talking to the app the way VideoSDK and the dashboards do."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from tests.support.signing import Signer


class WebhookClient:
    """An httpx client over the app plus the key VideoSDK would sign with."""

    def __init__(self, http: httpx.AsyncClient, signer: Signer) -> None:
        self.http = http
        self.signer = signer

    async def post_raw(
        self, body: bytes, *, signature: str | None = "sign", headers: dict[str, str] | None = None
    ) -> httpx.Response:
        sent = {"content-type": "application/json", **(headers or {})}
        if signature == "sign":
            sent["videosdk-signature"] = self.signer.sign(body)
        elif signature is not None:
            sent["videosdk-signature"] = signature
        return await self.http.post("/webhooks/videosdk", content=body, headers=sent)

    async def post(self, payload: dict[str, Any]) -> httpx.Response:
        return await self.post_raw(orjson.dumps(payload))

    async def deliver(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Post and insist on a 200; returns the JSON answer."""
        response = await self.post(payload)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.http.get(path, params=params)
