"""Upload signatures (protocol v1): the MQTT 5 user property `sig`, base64url without
padding of HMAC-SHA256 over the exact payload bytes, keyed with the 32 bytes the backend
issued at enrolment (handed out as base64url text without padding)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from typing import Final

__all__ = [
    "KEY_BYTES",
    "SIG_PROPERTY",
    "b64url",
    "b64url_decode",
    "decode_key",
    "sign",
    "verify_signature",
]

KEY_BYTES: Final = 32
SIG_PROPERTY: Final = "sig"

# The decoder silently skips characters outside its alphabet, so text is matched first.
# A signature is unpadded, as the protocol writes it; a key may come padded (enrolment
# tools differ) and is accepted either way.
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")
_B64URL_PADDED: Final = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def b64url(data: bytes) -> str:
    """base64url text without `=` padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """The bytes of unpadded base64url text; ValueError for anything else."""
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def decode_key(text: str) -> bytes:
    """The key bytes from the enrolment's `signing_key` (base64url, no padding)."""
    if not _B64URL_PADDED.fullmatch(text):
        raise ValueError("signing key is not base64url text")
    try:
        key = base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"signing key is not base64url: {exc}") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"signing key must be {KEY_BYTES} bytes, not {len(key)}")
    return key


def sign(key: bytes, payload: bytes) -> str:
    """The `sig` user property for an upload."""
    return b64url(hmac.new(key, payload, hashlib.sha256).digest())


def verify_signature(key: bytes, payload: bytes, sig: str | None) -> str | None:
    """None when `sig` is the right HMAC-SHA256 of the exact payload; else the reason."""
    if sig is None:
        return (
            "signature missing: a signed device must send the MQTT 5 user property "
            f"'{SIG_PROPERTY}'"
        )
    try:
        given = b64url_decode(sig.strip())
    except (ValueError, TypeError):
        return "signature is not base64url text"
    expected = hmac.new(key, payload, hashlib.sha256).digest()
    # Constant time: a comparison that stops early would leak how much of a guess is right.
    if not hmac.compare_digest(given, expected):
        return "signature does not match the payload"
    return None
