"""The nouns every part of the service shares: fixes, device events, rejections, alerts.

Immutable values only; no I/O. Times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

# The protocol's fix sources and v1 event kinds, shared with the device simulator; the
# phone agents' v1.1 kinds (protocol.records.PHONE_EVENT_KINDS) are not accepted here.
from protocol.records import EVENT_KINDS, FIX_SOURCES

__all__ = [
    "ALERT_KINDS",
    "DEFAULT_SEVERITY",
    "EVENT_KINDS",
    "FIX_SOURCES",
    "PRESET_NEEDS_HOME",
    "AlertKind",
    "AlertState",
    "DeviceEvent",
    "Fix",
    "Rejection",
    "Severity",
    "Status",
    "from_epoch_ms",
    "iso",
    "to_epoch_ms",
]


def from_epoch_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def to_epoch_ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


class Status(StrEnum):
    RED = "red"
    YELLOW = "yellow"
    BLUE = "blue"
    GREEN = "green"


# The presets that confine the subject around a home, so need its address.
PRESET_NEEDS_HOME = frozenset({"red", "yellow"})


class Severity(StrEnum):
    CRITICAL = "critical"
    SERIOUS = "serious"
    WARNING = "warning"
    INFO = "info"


class AlertState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class AlertKind(StrEnum):
    ZONE_EXIT = "zone_exit"
    ZONE_ENTER = "zone_enter"
    CURFEW = "curfew"
    PROXIMITY = "proximity"
    TAMPER = "tamper"
    BATTERY = "battery"
    COMMS_LOSS = "comms_loss"
    LOCATION_LOSS = "location_loss"
    SPOOFING = "spoofing"
    INTEGRITY = "integrity"
    DATA_GAP = "data_gap"
    JAMMING = "jamming"
    SOS = "sos"
    PHONE_STATUS = "phone_status"


ALERT_KINDS = frozenset(k.value for k in AlertKind)

# The severity each kind carries unless configured otherwise (SCRAM's scale: leaving an
# order's zone and tampering are critical; losing contact or battery are serious).
DEFAULT_SEVERITY: dict[AlertKind, Severity] = {
    AlertKind.ZONE_EXIT: Severity.CRITICAL,
    AlertKind.ZONE_ENTER: Severity.CRITICAL,
    AlertKind.CURFEW: Severity.CRITICAL,
    AlertKind.PROXIMITY: Severity.CRITICAL,
    AlertKind.TAMPER: Severity.CRITICAL,
    AlertKind.SOS: Severity.CRITICAL,
    AlertKind.INTEGRITY: Severity.CRITICAL,
    AlertKind.BATTERY: Severity.SERIOUS,
    AlertKind.COMMS_LOSS: Severity.SERIOUS,
    AlertKind.LOCATION_LOSS: Severity.SERIOUS,
    AlertKind.SPOOFING: Severity.SERIOUS,
    AlertKind.JAMMING: Severity.SERIOUS,
    AlertKind.DATA_GAP: Severity.WARNING,
    AlertKind.PHONE_STATUS: Severity.WARNING,
}


@dataclass(frozen=True, slots=True)
class Fix:
    """One position report, as accepted from a device."""

    device_id: str
    seq: int | None  # None for OwnTracks, which has no sequence numbers
    t: datetime
    lat: float
    lon: float
    acc: float
    src: str
    received_at: datetime
    spd: float | None = None
    batt: int | None = None


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    device_id: str
    seq: int | None
    t: datetime
    kind: str
    received_at: datetime
    detail: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Something refused, kept with its raw bytes and the reason."""

    topic: str
    reason: str
    raw: bytes
    received_at: datetime
    device_id: str | None = None
    seq: int | None = None
    record: dict[str, Any] | None = field(default=None)


def iso(t: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z`, as every answer of the API writes times."""
    if t is None:
        return None
    text = t.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")
