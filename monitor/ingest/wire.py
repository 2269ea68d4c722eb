"""Topics of protocol v1, as pure values (parsing and formatting, no client).

They are defined once, in `protocol.topics`, for the backend and the device simulator
alike; this module keeps the names where the service has always imported them.
"""

from __future__ import annotations

from protocol.topics import (
    DEVICE_ID,
    SUBSCRIPTIONS,
    Channel,
    DeviceTopic,
    TopicError,
    ack_topic,
    cmd_topic,
    parse_topic,
)

__all__ = [
    "DEVICE_ID",
    "SUBSCRIPTIONS",
    "Channel",
    "DeviceTopic",
    "TopicError",
    "ack_topic",
    "cmd_topic",
    "parse_topic",
]
