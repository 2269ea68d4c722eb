"""Stage 2: which enrolled device each message comes from.

A device's identity is its topic (`em/v1/dev/{device_id}/...`, or the OwnTracks topic it
was enrolled with), checked against the enrolled devices; one this process has not met
is looked up in the store (enrolled through another process a moment ago). Anything
else is refused with the reason, and kept."""

from __future__ import annotations

import logging

from monitor.ingest.subscriber import Message
from monitor.ingest.wire import TopicError, parse_topic
from monitor.pipeline.batch import Batch, Item
from monitor.pipeline.state import DeviceInfo
from monitor.store import devices as device_store

__all__ = ["run"]

log = logging.getLogger(__name__)


async def run(b: Batch) -> None:
    state = b.state
    for msg in b.messages:
        try:
            topic = parse_topic(msg.topic)
        except TopicError as exc:
            _refuse(b, msg, str(exc), None)
            continue
        if topic.channel == "owntracks":
            base = "/".join(msg.topic.split("/")[:3])
            found = state.owntracks.get(base)
            if found is None:
                _refuse(b, msg, f"no device is enrolled for {base!r}", None)
                continue
            b.items.append(Item(msg, "owntracks", state.devices[found]))
            continue
        assert topic.device_id is not None
        device = state.devices.get(topic.device_id)
        if device is None:
            row = await device_store.get(b.conn, topic.device_id)
            if row is not None:
                device = DeviceInfo.from_row(row)
                state.remember(device)
        if device is None:
            _refuse(b, msg, f"device {topic.device_id!r} is not enrolled", topic.device_id)
            continue
        b.items.append(Item(msg, topic.channel, device))


def _refuse(b: Batch, msg: Message, reason: str, device_id: str | None) -> None:
    log.warning("refused a message on %s: %s", msg.topic, reason)
    b.reject(msg, reason, device_id)
