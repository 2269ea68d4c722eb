"""Alert decisions, pure: what of a batch's judged changes reaches the record, and how.

- `coalesce`: of several updates to one episode in a batch the last says it all, and an
  episode opened in the batch opens with its latest detail (one event on the operators'
  screens, not an alert and at once its update).
- `Throttle`: an alert's count and latest fix are written at most once per
  `UPDATE_EVERY_S` (always when the episode clears), so a violating fleet does not flood
  the operators with changes to alerts already on their screens.
- `plan_conditions`: a device condition (tamper, battery, spoofing, comms loss, phone
  settings) opens the device's alert of that kind, adds to the open one, or clears it.
- `opening_severity` and `suspended`: the severity an alert opens with (configured per
  kind), and the mark of a planned suspension covering its time.

Times are passed in; nothing here reads a clock or a store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from monitor.domain import DEFAULT_SEVERITY, AlertKind, Severity, iso
from monitor.rules.engine import AlertChange, Change

__all__ = [
    "UPDATE_EVERY_S",
    "Amend",
    "Condition",
    "Planned",
    "Throttle",
    "coalesce",
    "episode_detail",
    "opening_severity",
    "plan_conditions",
    "suspended",
]

# At most one "updated" event per alert this often.
UPDATE_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class Planned:
    """A change to write: as judged, with the detail its alert carries."""

    change: AlertChange
    detail: dict[str, Any]


def episode_detail(c: AlertChange) -> dict[str, Any]:
    ep = c.episode
    last = ep.last
    detail: dict[str, Any] = {
        "rule": ep.rule.key,
        "count": ep.count,
        "late": c.late,
        "worst_margin_m": round(ep.worst_margin_m, 1),
        "last_fix": {
            "device_id": last.device_id,
            "seq": last.seq,
            "t": iso(last.t),
            "received_at": iso(last.received_at),
            "lat": last.lat,
            "lon": last.lon,
            "acc": last.acc,
            "src": last.src,
        },
    }
    if ep.crossing:
        detail["crossing"] = True  # the straight path between two fixes crossed the zone
    if not ep.partial:  # a window that began inside an episode does not know its start
        detail["episode"] = ep.key
    return detail


def coalesce(changes: Sequence[AlertChange]) -> list[Planned]:
    """The changes worth writing, in order, each with its alert's detail."""
    last_update: dict[str, int] = {}
    for i, c in enumerate(changes):
        if c.change is Change.UPDATE:
            last_update[c.episode.key] = i
    opening = {c.episode.key for c in changes if c.change is Change.OPEN}
    planned: list[Planned] = []
    for i, c in enumerate(changes):
        key = c.episode.key
        if c.change is Change.UPDATE and (last_update.get(key) != i or key in opening):
            continue
        detail = episode_detail(c)
        if c.change is Change.OPEN and last_update.get(key, -1) > i:
            detail = episode_detail(changes[last_update[key]])
        planned.append(Planned(c, detail))
    return planned


class Throttle:
    """When each alert's update was last written (a monotonic clock passed in)."""

    def __init__(self, every_s: float = UPDATE_EVERY_S) -> None:
        self.every_s = every_s
        self._written: dict[str, float] = {}

    def due(self, alert_id: str, now: float) -> bool:
        """Whether an update of this alert is written now; if so, it counts as written."""
        last = self._written.get(alert_id)
        if last is not None and now - last < self.every_s:
            return False
        self._written[alert_id] = now
        return True


@dataclass(frozen=True, slots=True)
class Condition:
    """One device condition, as a stage found it."""

    subject: str | None
    device_id: str
    kind: AlertKind
    clears: bool
    at: datetime  # the alert's fix time, unless the condition has no position
    info: dict[str, Any]
    severity: Severity | None = None
    received_at: datetime | None = None
    positioned: bool = True

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.kind.value, self.device_id, self.subject)

    @property
    def opening_severity(self) -> Severity:
        return self.severity or DEFAULT_SEVERITY[self.kind]


@dataclass(frozen=True, slots=True)
class Amend:
    """A change to an existing alert: an event and what it adds to the detail."""

    alert_id: str
    event: str  # "updated" or "cleared"
    patch: dict[str, Any]
    cleared_at: datetime | None = None


def plan_conditions(
    items: Sequence[Condition], stored: Mapping[int, str], new_id: Callable[[], str]
) -> tuple[list[tuple[str, Condition]], list[Amend]]:
    """Alerts to open (with the id drawn for each) and changes to open ones, in order.
    `stored`: the open alert of item i's (kind, device, subject) before the batch. One
    opened or cleared earlier in the same list counts, as it would one item at a time."""
    current: dict[tuple[str, str, str | None], str | None] = {}
    opens: list[tuple[str, Condition]] = []
    amends: list[Amend] = []
    for i, c in enumerate(items):
        alert_id = current[c.key] if c.key in current else stored.get(i)
        if c.clears:
            if alert_id is not None:
                amends.append(
                    Amend(
                        alert_id,
                        "cleared",
                        {"cleared_at": iso(c.at), "clear_reason": c.info.get("reason")},
                        cleared_at=c.at,
                    )
                )
            current[c.key] = None
            continue
        if alert_id is not None:
            amends.append(Amend(alert_id, "updated", {"last": c.info}))
            continue
        opened = new_id()
        current[c.key] = opened
        opens.append((opened, c))
    return opens, amends


def opening_severity(kind: str, default: str, overrides: Mapping[str, str]) -> str:
    """The severity an alert of `kind` opens with: the agency's setting for the kind, or
    the rule's own."""
    return overrides.get(kind, default)


def suspended(detail: dict[str, Any], suspension: Mapping[str, Any] | None) -> dict[str, Any]:
    """The detail of an alert whose time falls in a planned suspension: marked with it
    (recorded, not pushed live)."""
    if suspension is None:
        return detail
    return {**detail, "suspended": dict(suspension)}
