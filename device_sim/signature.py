"""Upload signatures (protocol v1): base64url without padding of HMAC-SHA256 over the
exact payload bytes, with the 32-byte key the backend issued at enrolment.

Defined once, in `protocol.signature`, so that the simulator signs exactly as the
backend verifies; this module keeps the names where the simulator has always had them.
"""

from __future__ import annotations

from protocol.signature import KEY_BYTES, b64url, decode_key, sign

__all__ = ["KEY_BYTES", "b64url", "decode_key", "sign"]
