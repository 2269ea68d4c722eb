"""Topics of protocol v1, as pure values: formatting the names and parsing the ones the
backend receives on (no client here)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "DEVICE_ID",
    "LEAVES",
    "PREFIX",
    "SUBSCRIPTIONS",
    "Channel",
    "DeviceTopic",
    "TopicError",
    "ack_topic",
    "cmd_topic",
    "device_topic",
    "parse_topic",
]

DEVICE_ID: Final = re.compile(r"^[A-Za-z0-9_-]{3,64}$")

# Every device topic is PREFIX/{device_id}/{leaf}.
PREFIX: Final = "em/v1/dev"
_PREFIX_PARTS: Final = PREFIX.split("/")
# up and state go device → backend, ack and cmd backend → device.
LEAVES: Final = ("up", "state", "ack", "cmd")

Channel = Literal["up", "state", "owntracks"]

# What the backend subscribes to (QoS 1). OwnTracks phones publish under their own tree.
SUBSCRIPTIONS: Final = (f"{PREFIX}/+/up", f"{PREFIX}/+/state", "owntracks/#")


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    channel: Channel
    device_id: str | None  # None for OwnTracks: resolved through the enrolled topic
    topic: str


class TopicError(ValueError):
    pass


def device_topic(device_id: str, leaf: str) -> str:
    """`em/v1/dev/{device_id}/{leaf}`, leaf one of LEAVES (not checked: a tool may
    want to publish where the protocol says nothing, to see it refused)."""
    return f"{PREFIX}/{device_id}/{leaf}"


def ack_topic(device_id: str) -> str:
    return device_topic(device_id, "ack")


def cmd_topic(device_id: str) -> str:
    return device_topic(device_id, "cmd")


def parse_topic(topic: str) -> DeviceTopic:
    """Split a topic the backend receives on; raise TopicError naming what is wrong."""
    parts = topic.split("/")
    if parts[0] == "owntracks":
        if len(parts) < 3 or not all(parts[1:3]):
            raise TopicError(f"topic {topic!r}: expected owntracks/{{user}}/{{device}}")
        return DeviceTopic("owntracks", None, topic)
    if len(parts) != 5 or parts[:3] != _PREFIX_PARTS:
        raise TopicError(f"topic {topic!r} is not em/v1/dev/{{device_id}}/up or /state")
    device_id, channel = parts[3], parts[4]
    if not DEVICE_ID.fullmatch(device_id):
        raise TopicError(f"topic {topic!r}: device_id does not match {DEVICE_ID.pattern}")
    if channel == "up":
        return DeviceTopic("up", device_id, topic)
    if channel == "state":
        return DeviceTopic("state", device_id, topic)
    raise TopicError(f"topic {topic!r}: the service does not consume '{channel}'")
