"""Signed deliveries as VideoSDK sends them, and the environment of a real server process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from app.videosdk.documents import fingerprint_of
from tests.support.signing import Signer

WEBHOOK_PATH = "/webhooks/videosdk"


@dataclass(frozen=True)
class Delivery:
    """One webhook as VideoSDK would (re)send it: the same bytes and signature each time."""

    label: str
    payload: dict[str, Any]
    body: bytes
    signature: str
    fingerprint: str

    @classmethod
    def signed(cls, signer: Signer, payload: dict[str, Any], label: str = "") -> Delivery:
        body = orjson.dumps(payload)
        return cls(label, payload, body, signer.sign(body), fingerprint_of(payload))


async def post_delivery(client: httpx.AsyncClient, delivery: Delivery) -> httpx.Response:
    headers = {"content-type": "application/json", "videosdk-signature": delivery.signature}
    return await client.post(WEBHOOK_PATH, content=delivery.body, headers=headers)


def server_env(database_url: str, signer: Signer, **extra: str) -> dict[str, str]:
    """Everything the service reads, so nothing leaks in from the caller's environment."""
    return {
        "DATABASE_URL": database_url,
        "VIDEOSDK_PUBLIC_KEY": signer.public_pem,
        "VIDEOSDK_PUBLIC_KEY_FILE": "",
        "WEBHOOK_SIGNATURE": "required",
        "API_TOKENS": "",
        "API_TOKENS_FILE": "",
        "API_AUTH": "required" if extra.get("API_TOKENS") else "off",
        "DATABASE_URL_FILE": "",
        "LOG_LEVEL": "WARNING",
        **extra,
    }
