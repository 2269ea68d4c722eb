"""What device events mean for alerts: tamper, battery, jamming, SOS, and their clears."""

from __future__ import annotations

from dataclasses import dataclass

from monitor.domain import AlertKind, DeviceEvent

__all__ = ["EventOutcome", "judge"]


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """An event opens (or adds to) the open alert of `kind`, or clears it."""

    kind: AlertKind
    clears: bool
    reason: str


_OPENS: dict[str, tuple[AlertKind, str]] = {
    "strap_open": (AlertKind.TAMPER, "strap opened"),
    "case_open": (AlertKind.TAMPER, "case opened"),
    "battery_critical": (AlertKind.BATTERY, "battery critical"),
    "jamming": (AlertKind.JAMMING, "GNSS or cellular jamming suspected"),
    "sos": (AlertKind.SOS, "SOS pressed"),
}
_CLEARS: dict[str, tuple[AlertKind, str]] = {
    # A strap closed again clears the condition; the tamper alert itself still needs an
    # officer's note to be resolved.
    "strap_closed": (AlertKind.TAMPER, "strap closed"),
    "charger_on": (AlertKind.BATTERY, "charger connected"),
}


def judge(event: DeviceEvent) -> EventOutcome | None:
    if event.kind in _OPENS:
        kind, reason = _OPENS[event.kind]
        return EventOutcome(kind, clears=False, reason=reason)
    if event.kind in _CLEARS:
        kind, reason = _CLEARS[event.kind]
        return EventOutcome(kind, clears=True, reason=reason)
    return None
