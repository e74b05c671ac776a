"""Where VideoSDK's public key comes from: env PEM, a file, or fetched once from a URL."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa

from app.core.config import Settings
from app.webhooks.signature import PublicKeyError, load_public_key

logger = logging.getLogger(__name__)

# After a failed fetch, requests answer 503 for this long before we try again, so a
# retry storm from VideoSDK does not become a fetch storm against its API.
FETCH_RETRY_INTERVAL_SECONDS = 5.0


class PublicKeyUnavailable(Exception):
    """The key cannot be obtained right now; the delivery must be retried later."""


def pem_from_response(body: bytes) -> str:
    """Accept a PEM body or a JSON body holding the PEM (any string field containing one)."""
    text = body.decode("utf-8", errors="replace").strip()
    if text.startswith("-----BEGIN"):
        return text
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise PublicKeyError("the key URL answered neither PEM nor JSON") from None
    stack: list[object] = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and "-----BEGIN" in item:
            return item
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    raise PublicKeyError("the key URL answered JSON without a PEM public key in it")


class PublicKeyProvider:
    def __init__(self, settings: Settings) -> None:
        self._url = settings.videosdk_public_key_url
        self._timeout = settings.public_key_fetch_timeout_seconds
        self._key: rsa.RSAPublicKey | None = None
        self._lock = asyncio.Lock()
        self._last_failure = 0.0
        if settings.videosdk_public_key is not None:
            self._key = load_public_key(settings.videosdk_public_key.get_secret_value())
            self.source = "VIDEOSDK_PUBLIC_KEY"
        elif settings.videosdk_public_key_file is not None:
            self._key = load_public_key(settings.videosdk_public_key_file.read_bytes())
            self.source = f"VIDEOSDK_PUBLIC_KEY_FILE ({settings.videosdk_public_key_file})"
        else:
            self.source = f"VIDEOSDK_PUBLIC_KEY_URL ({self._url})"

    async def get(self) -> rsa.RSAPublicKey:
        if self._key is not None:
            return self._key
        async with self._lock:
            if self._key is not None:
                return self._key
            if time.monotonic() - self._last_failure < FETCH_RETRY_INTERVAL_SECONDS:
                raise PublicKeyUnavailable("the last fetch of the public key failed; retry soon")
            try:
                self._key = await self._fetch()
            except (httpx.HTTPError, PublicKeyError) as exc:
                self._last_failure = time.monotonic()
                logger.error("cannot fetch the VideoSDK public key from %s: %s", self._url, exc)
                raise PublicKeyUnavailable("the VideoSDK public key cannot be fetched") from None
            logger.info("fetched the VideoSDK public key from %s", self._url)
            return self._key

    async def _fetch(self) -> rsa.RSAPublicKey:
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            response = await client.get(self._url)
            response.raise_for_status()
        return load_public_key(pem_from_response(response.content))
