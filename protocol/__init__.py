"""The device wire protocol's vocabulary, defined once for both ends of the wire.

`shared/protocol-v1.md` is the contract; this package is its executable form, imported
by the backend (`monitor`) and by the device simulator (`device_sim`) alike, so the two
cannot drift apart: `protocol.topics` (topic names, parsing and formatting),
`protocol.records` (fix sources, event kinds, the records an upload may hold) and
`protocol.signature` (the HMAC-SHA256 upload signature and the signing key's text).

Pure values and functions only: no I/O, no MQTT client, no asyncio. Nothing here
imports either side of the wire.
"""

from __future__ import annotations

__all__: list[str] = []
