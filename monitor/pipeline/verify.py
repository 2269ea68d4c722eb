"""Stage 3: the signature of every upload from a device enrolled as signed.

A missing, wrong or repeated `sig` refuses the whole upload (kept with its reason) and
raises the device's integrity alert (stage `integrity`)."""

from __future__ import annotations

import logging

from monitor.ingest.codec import verify_signature
from monitor.pipeline.batch import Batch

__all__ = ["run"]

log = logging.getLogger(__name__)


async def run(b: Batch) -> None:
    kept = []
    for item in b.items:
        device = item.device
        if item.channel != "up" or device is None or device.signing_key is None:
            kept.append(item)
            continue
        msg = item.msg
        fault = (
            "more than one 'sig' user property: an upload carries exactly one"
            if "sig" in msg.repeated_properties
            else verify_signature(device.signing_key, msg.payload, msg.user_properties.get("sig"))
        )
        if fault is None:
            kept.append(item)
            continue
        log.warning("refused a message on %s: %s", msg.topic, fault)
        rejection = b.reject(msg, fault, device.device_id)
        b.integrity.append((device.device_id, fault, rejection))
    b.items = kept
