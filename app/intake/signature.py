"""VideoSDK signature verification: RSA-SHA256 (PKCS#1 v1.5), base64, over the body, with
any key of a set (several during a key rotation).

No framework here: every failure is a `SignatureError` with a stable reason, which the
endpoint turns into a 401, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import orjson
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# Each key costs a verification per candidate body of every delivery that fails; a key
# text or a key endpoint offering more than this is a mistake (or an attack), not a rotation.
MAX_KEYS = 16

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)
_PUBLIC_KEY_LABELS = (b"PUBLIC KEY", b"RSA PUBLIC KEY")


class SignatureError(Exception):
    """The delivery is not signed by any configured key; `reason` says how, in one stable
    word (the metrics count by it): undecodable, wrong_length or no_key_verifies."""

    def __init__(
        self, message: str, reason: Literal["undecodable", "wrong_length", "no_key_verifies"]
    ) -> None:
        super().__init__(message)
        self.reason = reason


class PublicKeyError(Exception):
    """The configured or fetched text is not a usable set of RSA public keys."""


@dataclass(frozen=True, eq=False)
class KeySet:
    """The keys any one of which may sign a delivery, in the order they were given."""

    keys: tuple[rsa.RSAPublicKey, ...]

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[rsa.RSAPublicKey]:
        return iter(self.keys)

    def same_keys(self, other: KeySet) -> bool:
        return _identities(self.keys) == _identities(other.keys)


# VideoSDK's scheme (RSASSA-PKCS1-v1_5 with SHA-256); both objects are stateless.
_PADDING = padding.PKCS1v15()
_HASH = hashes.SHA256()


def _identity(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)


def _identities(keys: Iterable[rsa.RSAPublicKey]) -> frozenset[bytes]:
    return frozenset(_identity(key) for key in keys)


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    """One PEM public key, `BEGIN PUBLIC KEY` (SPKI) or `BEGIN RSA PUBLIC KEY` (PKCS#1)."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PublicKeyError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise PublicKeyError("the public key is not an RSA key")
    return key


def load_public_keys(pem: str | bytes) -> KeySet:
    """Every PEM public key in the text (text between the blocks is ignored); the same key
    given twice, in either form, counts once. Any other block (a private key, a
    certificate) or a block without its END line refuses the whole text."""
    data = pem.encode() if isinstance(pem, str) else pem
    data = data.replace(b"\\n", b"\n")  # PEMs pasted into env vars lose newlines
    blocks = list(_PEM_BLOCK.finditer(data))
    if not blocks:
        raise PublicKeyError("no PEM public key (-----BEGIN PUBLIC KEY-----) found")
    if data.count(b"-----BEGIN ") != len(blocks):
        raise PublicKeyError("an unterminated PEM block (BEGIN without its END line)")
    keys: dict[bytes, rsa.RSAPublicKey] = {}
    for block in blocks:
        label = block.group(1)
        if label not in _PUBLIC_KEY_LABELS:
            raise PublicKeyError(f"a {label.decode()} block is not a public key")
        key = load_public_key(block.group(0))
        keys.setdefault(_identity(key), key)
    if len(keys) > MAX_KEYS:
        raise PublicKeyError(f"{len(keys)} public keys; at most {MAX_KEYS} are accepted")
    return KeySet(tuple(keys.values()))


def compact_json(document: object) -> bytes | None:
    """The body as JavaScript's JSON.stringify writes it: no spaces, non-ASCII kept.

    None when the document is nested deeper than the serialiser goes (254 levels)."""
    try:
        return orjson.dumps(document)
    except orjson.JSONEncodeError:
        return None


def signature_bytes(header_value: str) -> bytes:
    """The header's base64 value (malformed base64 can never verify with any key)."""
    try:
        return base64.b64decode(header_value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(
            "the videosdk-signature header is not valid base64", "undecodable"
        ) from None


def _keys_of_length(keys: KeySet, signature: bytes) -> list[rsa.RSAPublicKey]:
    matching = [key for key in keys if key.key_size // 8 == len(signature)]
    if not matching:
        expected = " or ".join(sorted({str(key.key_size // 8) for key in keys}, key=int))
        noun = "key expects" if len(keys) == 1 else "keys expect"
        raise SignatureError(
            f"the signature is {len(signature)} bytes, the {noun} {expected}", "wrong_length"
        )
    return matching


def decode_signature(header_value: str, keys: KeySet) -> bytes:
    """The signature, refused unless it is base64 of the length of one of the keys."""
    signature = signature_bytes(header_value)
    _keys_of_length(keys, signature)
    return signature


def verify(keys: KeySet, signature: bytes, candidates: Iterable[bytes]) -> None:
    """Accept the signature if any key of its length verifies it over any candidate byte
    string. The candidates are read once, each tried with every such key: the work is one
    RSA verification per key and candidate, whatever the header holds."""
    matching = _keys_of_length(keys, signature)
    for message in candidates:
        for key in matching:
            try:
                key.verify(signature, message, _PADDING, _HASH)
            except InvalidSignature:
                continue
            return
    raise SignatureError("the signature does not match the body", "no_key_verifies")


def signed_candidates(raw: bytes, document: object) -> Iterator[bytes]:
    """What a delivery's signature may cover: the bytes as received, or (as VideoSDK signs
    JSON.stringify of the payload) their compact form. Intake and `trackhook verify-log`
    both check this."""
    yield raw
    compact = compact_json(document)
    if compact is not None and compact != raw:
        yield compact
