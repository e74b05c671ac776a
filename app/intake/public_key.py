"""Where VideoSDK's public keys come from: PEM text in the environment, a file (read again
when it changes), or VideoSDK's key endpoint (fetched on first use, then refreshed on a
signature failure and after a TTL), so that a key rotation needs no restart."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from time import monotonic
from typing import Protocol

import httpx
import orjson

from app.core.config import Settings
from app.intake.signature import (
    KeySet,
    PublicKeyError,
    SignatureError,
    load_public_keys,
    signature_bytes,
)
from app.intake.signature import verify as verify_signature

logger = logging.getLogger(__name__)

# While no key was ever fetched, requests answer 503 for this long after a failed fetch
# before we try again, so a retry storm from VideoSDK does not become a fetch storm.
FETCH_RETRY_INTERVAL_SECONDS = 5.0
# Once a key is held, at most one refresh a minute, whatever triggers it: a flood of forged
# signatures costs VideoSDK's endpoint one request a minute, and a failing endpoint is
# asked again once a minute, not once a delivery.
REFRESH_INTERVAL_SECONDS = 60.0
# How often the key file's metadata is looked at (besides on every signature failure): a
# key removed from the file stops verifying within this long.
FILE_CHECK_INTERVAL_SECONDS = 1.0

_FETCH_ERRORS = (httpx.HTTPError, httpx.InvalidURL, PublicKeyError)

Candidates = Callable[[], Iterable[bytes]]


class PublicKeyUnavailable(Exception):
    """No key can be obtained right now; the delivery must be retried later."""


def pem_from_response(body: bytes) -> str:
    """Every PEM in the key endpoint's answer: a PEM body, or JSON holding PEMs in string
    fields (VideoSDK answers `{"publicKey": "<PEM>"}`)."""
    text = body.decode("utf-8", errors="replace").strip()
    if text.startswith("-----BEGIN"):
        return text
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise PublicKeyError("the key URL answered neither PEM nor JSON") from None
    pems: list[str] = []
    stack: list[object] = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and "-----BEGIN" in item:
            pems.append(item)
        elif isinstance(item, dict):
            stack.extend(reversed(item.values()))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    if not pems:
        raise PublicKeyError("the key URL answered JSON without a PEM public key in it")
    return "\n".join(pems)


class _Trouble:
    """Logs a failure once: a warning when it starts (or its reason changes), debug while
    it repeats, and info when it ends."""

    def __init__(self) -> None:
        self._reason: str | None = None
        self._repeats = 0

    def failed(self, reason: str, message: str, *args: object) -> None:
        level = logging.DEBUG if reason == self._reason else logging.WARNING
        logger.log(level, message, *args)
        self._reason = reason
        self._repeats += 1

    def ended(self, message: str, *args: object) -> None:
        if self._reason is not None:
            logger.info(message + " (after %d failed attempt(s))", *args, self._repeats)
        self._reason = None
        self._repeats = 0


class _KeySource(Protocol):
    async def current(self) -> KeySet:
        """The keys to verify with now."""
        ...

    async def after_failure(self, seen: KeySet) -> KeySet | None:
        """Newer keys than `seen`, to try a failed signature again with, or None."""
        ...


class _FixedKeys:
    def __init__(self, keys: KeySet) -> None:
        self._keys = keys

    async def current(self) -> KeySet:
        return self._keys

    async def after_failure(self, seen: KeySet) -> KeySet | None:
        return None


def _stamp(path: Path) -> tuple[int, int, int, int]:
    # A rename over the file (Kubernetes secret volumes, `mv`) changes the inode; an
    # in-place write changes the size or the modification time.
    status = path.stat()
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


class _KeyFile:
    """VIDEOSDK_PUBLIC_KEY_FILE, read again when it changes. A file that cannot be read or
    holds no usable key keeps the keys read before."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp = _stamp(path)
        self._keys = load_public_keys(path.read_bytes())
        self._checked_at = monotonic()
        self._trouble = _Trouble()

    async def current(self) -> KeySet:
        if monotonic() - self._checked_at >= FILE_CHECK_INTERVAL_SECONDS:
            self._reload_if_changed()
        return self._keys

    async def after_failure(self, seen: KeySet) -> KeySet | None:
        self._reload_if_changed()
        return None if self._keys is seen else self._keys

    def _reload_if_changed(self) -> None:
        # A stat, and a read of a few KB when it changed: cheaper than a thread hop.
        self._checked_at = monotonic()
        try:
            stamp = _stamp(self._path)
            if stamp == self._stamp:
                return
            self._stamp = stamp
            keys = load_public_keys(self._path.read_bytes())
        except (OSError, PublicKeyError) as exc:
            self._trouble.failed(
                f"{type(exc).__name__}: {exc}",
                "cannot read the VideoSDK public keys from %s (%s); keeping the %d key(s) "
                "read before",
                self._path,
                exc,
                len(self._keys),
            )
            return
        self._trouble.ended("read the VideoSDK public keys from %s again", self._path)
        if not keys.same_keys(self._keys):
            logger.info("the VideoSDK public keys in %s changed: %d key(s)", self._path, len(keys))
            self._keys = keys


class _KeyUrl:
    """VIDEOSDK_PUBLIC_KEY_URL: fetched on first use; then fetched again after the TTL, and
    when a signature fails to verify, at most once every REFRESH_INTERVAL_SECONDS. A failed
    refresh keeps the keys fetched before."""

    def __init__(self, url: str, timeout: float, ttl: float) -> None:
        self._url = url
        self._timeout = timeout
        self._ttl = ttl
        self._keys: KeySet | None = None
        self._fetched_at = 0.0  # when the endpoint last answered the keys in hand
        self._attempted_at = float("-inf")
        self._lock = asyncio.Lock()
        self._trouble = _Trouble()

    async def current(self) -> KeySet:
        keys = self._keys
        if keys is None:
            return await self._first_fetch()
        # One request refreshes an expired key; the others meanwhile verify with the old one.
        if (
            monotonic() - self._fetched_at >= self._ttl
            and self._may_refresh()
            and not self._lock.locked()
        ):
            async with self._lock:
                if self._keys is keys and self._may_refresh():
                    await self._refresh(keys, "older than VIDEOSDK_PUBLIC_KEY_TTL_SECONDS")
                return self._keys or keys  # never None again once fetched
        return keys

    async def after_failure(self, seen: KeySet) -> KeySet | None:
        # Deliveries that fail together wait for one fetch and then all try its keys.
        async with self._lock:
            if self._keys is seen and self._may_refresh():
                await self._refresh(seen, "a signature did not verify")
            return None if self._keys is seen else self._keys

    def _may_refresh(self) -> bool:
        return monotonic() - self._attempted_at >= REFRESH_INTERVAL_SECONDS

    async def _first_fetch(self) -> KeySet:
        async with self._lock:
            if self._keys is not None:
                return self._keys
            if monotonic() - self._attempted_at < FETCH_RETRY_INTERVAL_SECONDS:
                raise PublicKeyUnavailable("the last fetch of the public key failed; retry soon")
            self._attempted_at = monotonic()
            try:
                keys = await self._fetch()
            except _FETCH_ERRORS as exc:
                logger.error("cannot fetch the VideoSDK public key from %s: %s", self._url, exc)
                raise PublicKeyUnavailable("the VideoSDK public key cannot be fetched") from None
            self._keys, self._fetched_at = keys, monotonic()
            logger.info("fetched %d VideoSDK public key(s) from %s", len(keys), self._url)
            return keys

    async def _refresh(self, held: KeySet, reason: str) -> None:
        self._attempted_at = monotonic()
        try:
            fresh = await self._fetch()
        except Exception as exc:  # best effort: whatever goes wrong, the keys in hand stay
            self._trouble.failed(
                f"{type(exc).__name__}: {exc}",
                "cannot refresh the VideoSDK public key from %s (%s): %s; keeping the %d "
                "key(s) fetched before",
                self._url,
                reason,
                exc,
                len(held),
            )
            return
        self._fetched_at = monotonic()
        self._trouble.ended("fetched the VideoSDK public key from %s again", self._url)
        if not fresh.same_keys(held):
            logger.info(
                "the VideoSDK public key at %s changed (%s): now %d key(s)",
                self._url,
                reason,
                len(fresh),
            )
            self._keys = fresh

    async def _fetch(self) -> KeySet:
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            response = await client.get(self._url)
            response.raise_for_status()
        return load_public_keys(pem_from_response(response.content))


class PublicKeyProvider:
    """The keys a delivery's signature is checked against, from the configured source:
    VIDEOSDK_PUBLIC_KEY, else VIDEOSDK_PUBLIC_KEY_FILE, else VIDEOSDK_PUBLIC_KEY_URL."""

    def __init__(self, settings: Settings) -> None:
        self._source: _KeySource
        if settings.videosdk_public_key is not None:
            keys = load_public_keys(settings.videosdk_public_key.get_secret_value())
            self._source = _FixedKeys(keys)
            self.source = f"VIDEOSDK_PUBLIC_KEY ({len(keys)} key(s))"
        elif settings.videosdk_public_key_file is not None:
            path = settings.videosdk_public_key_file
            self._source = _KeyFile(path)
            self.source = f"VIDEOSDK_PUBLIC_KEY_FILE ({os.fspath(path)}, read again on change)"
        else:
            url = settings.videosdk_public_key_url
            self._source = _KeyUrl(
                url,
                settings.public_key_fetch_timeout_seconds,
                settings.videosdk_public_key_ttl_seconds,
            )
            self.source = f"VIDEOSDK_PUBLIC_KEY_URL ({url})"

    async def get(self) -> KeySet:
        """The keys to verify with now; PublicKeyUnavailable while none was ever fetched."""
        return await self._source.current()

    async def verify(self, header_value: str, candidates: Candidates) -> None:
        """Accept a signature made by any current key; when none verifies, refresh the keys
        (as the source allows) and try once more, so that the first delivery signed with a
        rotated key is accepted. SignatureError (a 401) or PublicKeyUnavailable (a 503)."""
        keys = await self.get()
        signature = signature_bytes(header_value)
        try:
            verify_signature(keys, signature, candidates())
        except SignatureError:
            # An empty signature is made by no key, old or new: no reason to ask for one.
            fresh = await self._source.after_failure(keys) if signature else None
            if fresh is None:
                raise
            verify_signature(fresh, signature, candidates())
