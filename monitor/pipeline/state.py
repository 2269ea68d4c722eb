"""What the ingest keeps between batches, in one place: per device and per subject, for
the partitions this process holds (all of them without cluster mode).

Everything here can be rebuilt from the store: device conditions from their open
alerts, proximity episodes likewise, watermarks from the accounted seqs, rule state from
the subject's last fixes. `forget` drops what belongs to given partitions, so a process
that takes them over reads it again, and one that lost them trusts none of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from monitor.domain import Fix
from monitor.ingest.partition import partition_of
from monitor.rules.alerting import Throttle
from monitor.rules.book import RuleBook, SharedZones
from monitor.rules.engine import ProximityState, SubjectState
from monitor.rules.liveness import LivenessState
from monitor.rules.plausibility import DeviceCheck
from monitor.rules.watermark import Watermark

__all__ = ["NOT_HEARD", "DeviceInfo", "Heard", "PartitionState"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    device_id: str
    kind: str
    subject_id: str | None
    assigned_at: datetime | None
    signing_key: bytes | None
    owntracks_topic: str | None
    fix_interval_s: float = 60.0
    upload_interval_s: float = 60.0

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DeviceInfo:
        return cls(
            device_id=row["device_id"],
            kind=row["kind"],
            subject_id=str(row["subject_id"]) if row["subject_id"] is not None else None,
            assigned_at=row["assigned_at"],
            signing_key=bytes(row["signing_key"]) if row["signing_key"] is not None else None,
            owntracks_topic=row["owntracks_topic"],
            fix_interval_s=float(row["fix_interval_s"]),
            upload_interval_s=float(row["upload_interval_s"]),
        )

    @property
    def partition_key(self) -> str:
        """What the bridge partitions this device's messages by (ingest.partition)."""
        return self.owntracks_topic or self.device_id

    def subject_at(self, t: datetime) -> str | None:
        """Fixes stamped before the device was fitted belong to no subject."""
        if self.subject_id is None or self.assigned_at is None or t < self.assigned_at:
            return None
        return self.subject_id


@dataclass
class Heard:
    """What the service last heard from a device (for liveness)."""

    upload_at: datetime | None = None
    fix_t: datetime | None = None
    no_fix_at: datetime | None = None
    battery: int | None = None
    charging: bool = False


NOT_HEARD = Heard()  # read only: a device never heard from


@dataclass
class PartitionState:
    """The ingest's memory. `partitions`: how many the device stream has (1 without
    cluster mode)."""

    partitions: int = 1
    devices: dict[str, DeviceInfo] = field(default_factory=dict)
    owntracks: dict[str, str] = field(default_factory=dict)  # enrolled topic -> device
    watermarks: dict[str, Watermark] = field(default_factory=dict)
    # Devices whose watermark waits on a hole: the tick looks at these, not at all.
    holes: set[str] = field(default_factory=set)
    books: dict[str, RuleBook] = field(default_factory=dict)
    shared: SharedZones | None = None
    states: dict[str, SubjectState] = field(default_factory=dict)
    episode_alerts: dict[str, str] = field(default_factory=dict)  # episode key -> alert
    online: dict[str, bool] = field(default_factory=dict)
    throttle: Throttle = field(default_factory=Throttle)
    # Plausibility (spoofing) per device, and what liveness needs to know of each.
    checks: dict[str, DeviceCheck] = field(default_factory=dict)
    heard: dict[str, Heard] = field(default_factory=dict)
    liveness: dict[str, LivenessState] = field(default_factory=dict)
    # Devices liveness need not judge again before this time, unless heard of.
    quiet_until: dict[str, datetime] = field(default_factory=dict)
    # Devices whose open conditions were read from the store since they were taken.
    liveness_known: set[str] = field(default_factory=set)
    # Proximity (mobile exclusion zones): per subject state, each device's latest fix,
    # and which subjects must keep away from which device (loaded whole, on first need).
    prox: dict[str, ProximityState] = field(default_factory=dict)
    last_fix: dict[str, Fix] = field(default_factory=dict)
    watchers: dict[str, list[str]] | None = None
    inside: dict[str, dict[str, bool]] = field(default_factory=dict)  # zones surely in
    _partition: dict[str, int] = field(default_factory=dict)  # memo

    def remember(self, device: DeviceInfo) -> None:
        self.devices[device.device_id] = device
        self.quiet_until.pop(device.device_id, None)
        self._partition.pop(device.device_id, None)
        if device.owntracks_topic:
            self.owntracks[device.owntracks_topic] = device.device_id

    def partition(self, device_id: str) -> int:
        found = self._partition.get(device_id)
        if found is None:
            device = self.devices.get(device_id)
            key = device.partition_key if device is not None else device_id
            found = self._partition[device_id] = partition_of(key, self.partitions)
        return found

    def keep_watermarks(self, found: dict[str, Watermark]) -> None:
        self.watermarks.update(found)
        for device_id, wm in found.items():
            if wm.hole_since is None:
                self.holes.discard(device_id)
            else:
                self.holes.add(device_id)

    def forget(self, partitions: set[int]) -> tuple[int, int]:
        """Drop what is kept of the devices of these partitions and of their subjects;
        how many of each."""
        if not partitions:
            return 0, 0
        devices = {d for d in self.devices if self.partition(d) in partitions}
        subjects = {s for d in devices if (s := self.devices[d].subject_id) is not None}
        for table in (
            self.watermarks,
            self.checks,
            self.heard,
            self.liveness,
            self.quiet_until,
            self.last_fix,
            self.online,
        ):
            for d in devices & table.keys():
                del table[d]
        self.holes -= devices
        self.liveness_known -= devices
        for by_subject in (self.states, self.prox, self.inside):
            for sid in subjects & by_subject.keys():
                del by_subject[sid]
        # Episode keys are "rule|device|seq|t": those of the forgotten devices.
        for key in [k for k in self.episode_alerts if _episode_device(k) in devices]:
            del self.episode_alerts[key]
        return len(devices), len(subjects)


def _episode_device(key: str) -> str | None:
    parts = key.split("|")
    return parts[1] if len(parts) > 1 else None
