"""Stage 4: each message's records.

An upload is decoded into fixes, events and refused records (or taken as the broker
relay decoded it); a `state` message becomes an online/offline event when it changes
what is known; an OwnTracks location becomes a fix, its lwt and status messages
events. A whole-upload fault refuses the message, kept with its reason."""

from __future__ import annotations

import json
import logging

from monitor.domain import DeviceEvent
from monitor.ingest.codec import UploadFault, decode_upload, upload_from_wire
from monitor.ingest.owntracks import decode_owntracks
from monitor.pipeline.batch import Batch, Item

__all__ = ["run"]

log = logging.getLogger(__name__)


async def run(b: Batch) -> None:
    kept: list[Item] = []
    for item in b.items:
        device, msg = item.device, item.msg
        assert device is not None
        if item.channel == "state":
            _state(b, item)
            continue
        if item.channel == "owntracks":
            try:
                fix, event = decode_owntracks(device.device_id, msg.payload, msg.received_at)
            except ValueError as exc:
                _refuse(b, item, f"OwnTracks payload: {exc}")
                continue
            if fix is not None:
                b.fresh = False  # no seq: a redelivery is only recognised by the index
                b.fixes.append((fix, device.subject_at(fix.t)))
            if event is not None:
                b.events.append((event, device.subject_at(event.t)))
            continue
        try:
            item.upload = (
                decode_upload(device.device_id, msg.topic, msg.payload, msg.received_at)
                if msg.upload is None
                else upload_from_wire(device.device_id, msg.topic, msg.received_at, msg.upload)
            )
        except UploadFault as exc:
            _refuse(b, item, str(exc))
            continue
        kept.append(item)
    b.items = kept


def _refuse(b: Batch, item: Item, reason: str) -> None:
    log.warning("refused a message on %s: %s", item.msg.topic, reason)
    b.reject(item.msg, reason, item.device.device_id if item.device else None)


def _state(b: Batch, item: Item) -> None:
    device, msg = item.device, item.msg
    assert device is not None
    try:
        doc = json.loads(msg.payload)
        online = doc["online"]
        if not isinstance(online, bool):
            raise TypeError("'online' must be true or false")
    except (ValueError, KeyError, TypeError) as exc:
        _refuse(b, item, f"state payload: {exc!s}")
        return
    if b.state.online.get(device.device_id) == online:
        return
    b.state.online[device.device_id] = online
    event = DeviceEvent(
        device.device_id, None, msg.received_at, "online" if online else "offline", msg.received_at
    )
    b.events.append((event, device.subject_at(msg.received_at)))
