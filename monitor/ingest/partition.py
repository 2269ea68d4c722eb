"""Which partition a device's messages belong to, and how many partitions a process
should hold: pure values, shared by the bridge (which files each message under its
partition) and the processes that own the partitions.

A device is one partition for ever, whoever publishes for it, so its records are
processed by one process at a time, in the order the stream holds them. The hash is
CRC-32 of the device's key, the same in every process and every release (Python's own
`hash` of a string changes with each interpreter).
"""

from __future__ import annotations

import zlib

from monitor.ingest.wire import DEVICE_ID

__all__ = ["fair_share", "partition_key", "partition_of", "partition_of_topic"]


def partition_key(topic: str) -> str:
    """The key a message is partitioned by: the device id of `em/v1/dev/{id}/...`, or
    `owntracks/{user}/{device}` for an OwnTracks phone (the enrolled topic, which names
    exactly one device). Anything else is keyed by its whole topic: it is refused by
    whichever process takes it, and refused the same way by any."""
    parts = topic.split("/")
    if len(parts) >= 4 and parts[:3] == ["em", "v1", "dev"] and DEVICE_ID.fullmatch(parts[3]):
        return parts[3]
    if parts[0] == "owntracks" and len(parts) >= 3:
        return "/".join(parts[:3])
    return topic


def partition_of(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


def partition_of_topic(topic: str, partitions: int) -> int:
    return partition_of(partition_key(topic), partitions)


def fair_share(partitions: int, members: list[str], me: str) -> int:
    """How many partitions `me` should hold among `members` (live processes, `me`
    included): an even split, the remainder going to the first members by name, so every
    process computes the same split and every partition has a place."""
    ordered = sorted(set(members) | {me})
    base, extra = divmod(partitions, len(ordered))
    return base + (1 if ordered.index(me) < extra else 0)
