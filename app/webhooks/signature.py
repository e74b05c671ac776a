"""VideoSDK signature verification: RSA-SHA256 (PKCS#1 v1.5), base64, over the body.

No framework here: every failure is a `SignatureError` with a stable reason, which the
endpoint turns into a 401, never a 500.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

import orjson
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class SignatureError(Exception):
    """The delivery is not signed by the configured key."""


class PublicKeyError(Exception):
    """The configured or fetched text is not a usable RSA public key."""


def load_public_key(pem: str | bytes) -> rsa.RSAPublicKey:
    """Parse a PEM public key, `BEGIN PUBLIC KEY` (SPKI) or `BEGIN RSA PUBLIC KEY` (PKCS#1)."""
    data = pem.encode() if isinstance(pem, str) else pem
    data = data.strip().replace(b"\\n", b"\n")  # PEMs pasted into env vars lose newlines
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PublicKeyError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise PublicKeyError("the public key is not an RSA key")
    return key


def compact_json(document: object) -> bytes | None:
    """The body as JavaScript's JSON.stringify writes it: no spaces, non-ASCII kept.

    None when the document is nested deeper than the serialiser goes (254 levels)."""
    try:
        return orjson.dumps(document)
    except orjson.JSONEncodeError:
        return None


def decode_signature(header_value: str, key: rsa.RSAPublicKey) -> bytes:
    try:
        signature = base64.b64decode(header_value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("the videosdk-signature header is not valid base64") from None
    if len(signature) != key.key_size // 8:
        raise SignatureError(
            f"the signature is {len(signature)} bytes, the key expects {key.key_size // 8}"
        )
    return signature


def verify(key: rsa.RSAPublicKey, signature: bytes, candidates: Iterable[bytes]) -> None:
    """Accept the signature if it verifies over any of the candidate byte strings."""
    for message in candidates:
        try:
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return
    raise SignatureError("the signature does not match the body")
