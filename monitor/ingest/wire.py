"""Topics of protocol v1, as pure values (parsing and formatting, no client)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DEVICE_ID",
    "SUBSCRIPTIONS",
    "DeviceTopic",
    "TopicError",
    "ack_topic",
    "cmd_topic",
    "parse_topic",
]

DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{3,64}$")

Channel = Literal["up", "state", "owntracks"]

# What the service subscribes to (QoS 1). OwnTracks phones publish under their own tree.
SUBSCRIPTIONS = ("em/v1/dev/+/up", "em/v1/dev/+/state", "owntracks/#")


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    channel: Channel
    device_id: str | None  # None for OwnTracks: resolved through the enrolled topic
    topic: str


class TopicError(ValueError):
    pass


def parse_topic(topic: str) -> DeviceTopic:
    """Split a topic the service receives on; raise TopicError naming what is wrong."""
    parts = topic.split("/")
    if parts[0] == "owntracks":
        if len(parts) < 3 or not all(parts[1:3]):
            raise TopicError(f"topic {topic!r}: expected owntracks/{{user}}/{{device}}")
        return DeviceTopic("owntracks", None, topic)
    if len(parts) != 5 or parts[:3] != ["em", "v1", "dev"]:
        raise TopicError(f"topic {topic!r} is not em/v1/dev/{{device_id}}/up or /state")
    device_id, channel = parts[3], parts[4]
    if not DEVICE_ID.fullmatch(device_id):
        raise TopicError(f"topic {topic!r}: device_id does not match {DEVICE_ID.pattern}")
    if channel == "up":
        return DeviceTopic("up", device_id, topic)
    if channel == "state":
        return DeviceTopic("state", device_id, topic)
    raise TopicError(f"topic {topic!r}: the service does not consume '{channel}'")


def ack_topic(device_id: str) -> str:
    return f"em/v1/dev/{device_id}/ack"


def cmd_topic(device_id: str) -> str:
    return f"em/v1/dev/{device_id}/cmd"
