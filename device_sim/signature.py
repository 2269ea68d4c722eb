"""Upload signatures (protocol v1): base64url without padding of HMAC-SHA256 over the
exact payload bytes, with the 32-byte key the backend issued at enrolment."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

__all__ = ["KEY_BYTES", "b64url", "decode_key", "sign"]

KEY_BYTES = 32
_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def b64url(data: bytes) -> str:
    """base64url text without `=` padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_key(text: str) -> bytes:
    """The key bytes from the enrolment's `signing_key` (base64url, no padding)."""
    # The decoder would skip characters outside the alphabet; a key must not.
    if not _B64URL.fullmatch(text):
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
