"""The rules in force for one subject at any instant, past or present.

A subject's rule book holds every zone it ever had (each with the period it was in force)
and every status order (red, yellow, blue, green) in the order they were recorded. A
status order replaces the status rules from its `effective_at` on, so the status in
force at an instant is found by replaying the orders in the order they were recorded,
each one cutting the timeline at its own `effective_at`. A late fix is judged by what
this says for its own fix time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from geofences.model import Circle, Shape
from monitor.domain import AlertKind, Severity, Status
from monitor.rules.schedule import Schedule

__all__ = ["PRESET_RADIUS_M", "Rule", "RuleBook", "StatusOrder", "ZoneEntry"]

# The radius each preset sets when the order does not name one (operator-api.md).
PRESET_RADIUS_M: dict[Status, float] = {Status.RED: 50.0, Status.YELLOW: 500.0}

# The tag on shared zones that a blue status keeps the subject out of.
NEGATIVE_TEST_TAG = "negative_test_required"


@dataclass(frozen=True, slots=True)
class Rule:
    """One state rule: the subject must be inside (or must not be inside) a shape."""

    key: str  # stable across time: "zone:<zone id>"
    zone_id: str | None
    shape: Shape
    must_be_inside: bool
    kind: AlertKind
    severity: Severity
    schedule: Schedule | None = None
    # A home's rule: a fix from the home RF beacon is inside whatever its coordinates.
    home: bool = False


@dataclass(frozen=True, slots=True)
class ZoneEntry:
    zone_id: str
    kind: str  # home | inclusion | exclusion
    shape: Shape
    valid_from: datetime
    valid_until: datetime | None = None
    schedule: Schedule | None = None
    name: str | None = None
    tags: frozenset[str] = frozenset()

    def in_force(self, t: datetime) -> bool:
        return self.valid_from <= t and (self.valid_until is None or t < self.valid_until)


@dataclass(frozen=True, slots=True)
class StatusOrder:
    status: Status
    effective_at: datetime
    recorded_at: datetime
    home: tuple[float, float] | None = None  # (lon, lat)
    radius_m: float | None = None
    zone_id: str | None = None  # the home zone created for the order


def _zone_rule(zone: ZoneEntry) -> Rule:
    inside = zone.kind in ("home", "inclusion")
    if inside:
        kind = AlertKind.CURFEW if zone.schedule is not None else AlertKind.ZONE_EXIT
    else:
        kind = AlertKind.ZONE_ENTER
    return Rule(
        key=f"zone:{zone.zone_id}",
        zone_id=zone.zone_id,
        shape=zone.shape,
        must_be_inside=inside,
        kind=kind,
        severity=Severity.CRITICAL,
        schedule=zone.schedule,
        home=zone.kind == "home",
    )


@dataclass(frozen=True, slots=True)
class RuleBook:
    subject_id: str
    timezone: str
    zones: tuple[ZoneEntry, ...] = ()
    statuses: tuple[StatusOrder, ...] = ()
    shared: tuple[ZoneEntry, ...] = ()
    _segments: tuple[StatusOrder, ...] = field(default=(), init=False, repr=False)

    def __post_init__(self) -> None:
        # Replay the orders as recorded: each cuts the timeline at its effective_at.
        timeline: list[StatusOrder] = []
        for order in sorted(self.statuses, key=lambda o: o.recorded_at):
            timeline = [o for o in timeline if o.effective_at < order.effective_at]
            timeline.append(order)
        object.__setattr__(self, "_segments", tuple(timeline))

    def status_at(self, t: datetime) -> StatusOrder | None:
        current = None
        for order in self._segments:
            if order.effective_at <= t:
                current = order
            else:
                break
        return current

    def change_instants(self) -> list[datetime]:
        """Instants at which the set of rules may change (schedules aside)."""
        instants = {o.effective_at for o in self._segments}
        for z in (*self.zones, *self.shared):
            instants.add(z.valid_from)
            if z.valid_until is not None:
                instants.add(z.valid_until)
        return sorted(instants)

    def rules_at(self, t: datetime) -> tuple[Rule, ...]:
        """The rules in force at `t`, schedules not yet applied (see Rule.schedule)."""
        rules = [_zone_rule(z) for z in self.zones if z.in_force(t)]
        order = self.status_at(t)
        if order is not None:
            if order.status in (Status.RED, Status.YELLOW) and order.home is not None:
                radius = order.radius_m or PRESET_RADIUS_M[order.status]
                rules.append(
                    Rule(
                        key=f"status:{order.zone_id or order.status.value}",
                        zone_id=order.zone_id,
                        shape=Circle(order.home[0], order.home[1], radius),
                        must_be_inside=True,
                        kind=AlertKind.ZONE_EXIT,
                        severity=Severity.CRITICAL,
                        home=True,
                    )
                )
            elif order.status == Status.BLUE:
                rules.extend(
                    _zone_rule(z)
                    for z in self.shared
                    if NEGATIVE_TEST_TAG in z.tags and z.in_force(t)
                )
        return tuple(rules)
