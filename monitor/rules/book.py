"""The rules in force for one subject at any instant, past or present.

A subject's rule book holds every zone it ever had (each with the period it was in force)
and every status order (red, yellow, blue, green) in the order they were recorded. A
status order replaces the status rules from its `effective_at` on, so the status in
force at an instant is found by replaying the orders in the order they were recorded,
each one cutting the timeline at its own `effective_at`. A late fix is judged by what
this says for its own fix time.

Shared zone sets (every airport) are held by many books: build one `SharedZones` and
pass the same object to every book, so that the zones and their spatial index
(`geofences.index.ZoneIndex`) exist once. A plain tuple works too; each book then
builds its own index, once, when it is first needed.

Proximity rules (a mobile exclusion zone around another enrolled device, such as a
victim's phone) are kept apart from the zone rules: they are judged against that
device's latest fix by `engine.evaluate_proximity`, not by `engine.evaluate`.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final

from geofences.index import ZoneIndex
from geofences.model import Circle, Shape
from monitor.domain import AlertKind, Severity, Status
from monitor.rules.schedule import Schedule

__all__ = [
    "NEGATIVE_TEST_TAG",
    "PRESET_RADIUS_M",
    "SHARED_INDEX_MIN",
    "ProximityEntry",
    "ProximityRule",
    "Rule",
    "RuleBook",
    "SharedZones",
    "StatusOrder",
    "ZoneEntry",
    "order_rule",
    "zone_rule",
]

# The radius each preset sets when the order does not name one (operator-api.md).
PRESET_RADIUS_M: dict[Status, float] = {Status.RED: 50.0, Status.YELLOW: 500.0}

# The tag on shared zones that a blue status keeps the subject out of.
NEGATIVE_TEST_TAG = "negative_test_required"

# From this many shared zones on, the engine asks the spatial index which zones a fix is
# in or near instead of measuring every zone (fewer are cheaper measured directly).
SHARED_INDEX_MIN: Final = 32


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


@dataclass(frozen=True, slots=True)
class ProximityEntry:
    """ "Stay at least `distance_m` metres from device `other_device_id`" (a victim's
    phone: a mobile exclusion zone), in force over [valid_from, valid_until)."""

    rule_id: str
    other_device_id: str
    distance_m: float
    valid_from: datetime
    valid_until: datetime | None = None
    schedule: Schedule | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if not self.distance_m > 0.0:
            raise ValueError(f"distance_m must be positive, not {self.distance_m}")

    def in_force(self, t: datetime) -> bool:
        return self.valid_from <= t and (self.valid_until is None or t < self.valid_until)


@dataclass(frozen=True, slots=True)
class ProximityRule:
    """A proximity rule in force: the key is stable across time ("proximity:<rule id>")."""

    key: str
    rule_id: str
    other_device_id: str
    distance_m: float
    kind: AlertKind = AlertKind.PROXIMITY
    severity: Severity = Severity.CRITICAL
    schedule: Schedule | None = None


class SharedZones(tuple[ZoneEntry, ...]):
    """A shared zone set (every airport), to be held by many rule books at once.

    A tuple of `ZoneEntry`, so it goes wherever `RuleBook.shared` does; it also keeps the
    entries tagged `negative_test_required` and a spatial index over them, built once on
    first use (index ids are positions in `tagged`, since an edited zone has several
    entries under one zone id).
    """

    _tagged: tuple[ZoneEntry, ...]
    _index: ZoneIndex | None
    _by_zone: dict[str, tuple[int, ...]]
    _not_exclusion: tuple[int, ...]

    def __new__(cls, entries: tuple[ZoneEntry, ...] | list[ZoneEntry] = ()) -> SharedZones:
        self = super().__new__(cls, entries)
        self._tagged = tuple(z for z in self if NEGATIVE_TEST_TAG in z.tags)
        self._index = None
        by_zone: dict[str, list[int]] = {}
        for i, z in enumerate(self._tagged):
            by_zone.setdefault(z.zone_id, []).append(i)
        self._by_zone = {k: tuple(v) for k, v in by_zone.items()}
        self._not_exclusion = tuple(i for i, z in enumerate(self._tagged) if z.kind != "exclusion")
        return self

    @property
    def tagged(self) -> tuple[ZoneEntry, ...]:
        """The entries a blue status keeps the subject out of."""
        return self._tagged

    def spatial_index(self) -> ZoneIndex:
        """A spatial index over `tagged`, zone ids being positions in it ("0", "1", …)."""
        if self._index is None:
            self._index = ZoneIndex((str(i), z.shape) for i, z in enumerate(self._tagged))
        return self._index

    @property
    def not_exclusion(self) -> tuple[int, ...]:
        """Positions in `tagged` of entries that are not exclusion zones (rare)."""
        return self._not_exclusion

    def positions(self, zone_id: str) -> tuple[int, ...]:
        """Positions in `tagged` of the entries of one zone (one per version)."""
        return self._by_zone.get(zone_id, ())


def zone_rule(zone: ZoneEntry) -> Rule:
    """The state rule a zone sets (home and inclusion: be inside; exclusion: do not)."""
    return _zone_rule(zone)


def order_rule(order: StatusOrder) -> Rule | None:
    """The home-radius rule of a red or yellow order with a home; None for any other."""
    if order.status not in (Status.RED, Status.YELLOW) or order.home is None:
        return None
    radius = order.radius_m or PRESET_RADIUS_M[order.status]
    return Rule(
        key=f"status:{order.zone_id or order.status.value}",
        zone_id=order.zone_id,
        shape=Circle(order.home[0], order.home[1], radius),
        must_be_inside=True,
        kind=AlertKind.ZONE_EXIT,
        severity=Severity.CRITICAL,
        home=True,
    )


# A curfew binds this long after its window opens unless the schedule says otherwise
# (`grace_min`): arriving home a few minutes late is not a breach worth an alert.
CURFEW_GRACE_S = 300.0


def _zone_rule(zone: ZoneEntry) -> Rule:
    inside = zone.kind in ("home", "inclusion")
    schedule = zone.schedule
    if inside and schedule is not None and schedule.grace_s is None:
        schedule = replace(schedule, grace_s=CURFEW_GRACE_S)
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
        schedule=schedule,
        home=zone.kind == "home",
    )


_EARLIEST: Final = datetime.min.replace(tzinfo=UTC)
_LATEST: Final = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class RuleBook:
    subject_id: str
    timezone: str
    zones: tuple[ZoneEntry, ...] = ()
    statuses: tuple[StatusOrder, ...] = ()
    shared: tuple[ZoneEntry, ...] = ()
    proximity: tuple[ProximityEntry, ...] = ()
    _segments: tuple[StatusOrder, ...] = field(default=(), init=False, repr=False)
    _shared: SharedZones | None = field(default=None, init=False, repr=False, compare=False)
    # The rule each zone or order sets, built once: `own_rules_at` is asked for every
    # fix, and building a rule (a shape) each time was a fifth of the ingest's rule work.
    _rules: dict[int, Rule | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # The last answer of `own_rules_at` and the span of time it holds for, [from, until):
    # asked three times per fix (geometry, judging, transitions), nearly always within
    # the span of the one before.
    _span: list[tuple[datetime, datetime, tuple[Rule, ...]]] = field(
        default_factory=list, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Replay the orders as recorded: each cuts the timeline at its effective_at.
        timeline: list[StatusOrder] = []
        for order in sorted(self.statuses, key=lambda o: o.recorded_at):
            timeline = [o for o in timeline if o.effective_at < order.effective_at]
            timeline.append(order)
        object.__setattr__(self, "_segments", tuple(timeline))

    @property
    def segments(self) -> tuple[StatusOrder, ...]:
        """The orders that survive the replay, by effective_at: each is in force from its
        effective_at until the next one's."""
        return self._segments

    @property
    def shared_set(self) -> SharedZones:
        """`shared` as a `SharedZones` (itself when it is one; else built once per book)."""
        if isinstance(self.shared, SharedZones):
            return self.shared
        if self._shared is None:
            object.__setattr__(self, "_shared", SharedZones(self.shared))
        assert self._shared is not None
        return self._shared

    def own_rules_at(self, t: datetime) -> tuple[Rule, ...]:
        """The rules in force at `t` but those of shared zones (see `shared_at`)."""
        span = self._span
        if span:
            since, until, kept = span[0]
            if since <= t < until:
                return kept
        rules = self._own_rules_at(t)
        # They change only at a zone's valid_from or valid_until or an order's
        # effective_at: between two such instants they are these.
        instants = sorted(
            {o.effective_at for o in self._segments}
            | {z.valid_from for z in self.zones}
            | {z.valid_until for z in self.zones if z.valid_until is not None}
        )
        i = bisect_right(instants, t)
        span[:] = [
            (
                instants[i - 1] if i > 0 else _EARLIEST,
                instants[i] if i < len(instants) else _LATEST,
                rules,
            )
        ]
        return rules

    def _own_rules_at(self, t: datetime) -> tuple[Rule, ...]:
        rules: list[Rule] = []
        for z in self.zones:
            if z.in_force(t):
                rule = self._rules.get(id(z))
                if rule is None:
                    rule = self._rules[id(z)] = _zone_rule(z)
                rules.append(rule)
        order = self.status_at(t)
        if order is not None:
            if id(order) in self._rules:
                rule = self._rules[id(order)]
            else:
                rule = self._rules[id(order)] = order_rule(order)
            if rule is not None:
                rules.append(rule)
        return tuple(rules)

    def shared_at(self, t: datetime) -> bool:
        """Whether the shared zones tagged `negative_test_required` bind the subject at
        `t` (a blue status); each such zone binds only while it is itself in force."""
        order = self.status_at(t)
        return order is not None and order.status == Status.BLUE

    def proximity_at(self, t: datetime) -> tuple[ProximityRule, ...]:
        """The proximity rules in force at `t`, schedules not yet applied."""
        return tuple(
            ProximityRule(
                key=f"proximity:{p.rule_id}",
                rule_id=p.rule_id,
                other_device_id=p.other_device_id,
                distance_m=p.distance_m,
                schedule=p.schedule,
            )
            for p in self.proximity
            if p.in_force(t)
        )

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
        spans: list[ZoneEntry | ProximityEntry] = [*self.zones, *self.shared, *self.proximity]
        for z in spans:
            instants.add(z.valid_from)
            if z.valid_until is not None:
                instants.add(z.valid_until)
        return sorted(instants)

    def rules_at(self, t: datetime) -> tuple[Rule, ...]:
        """The rules in force at `t`, schedules not yet applied (see Rule.schedule), shared
        zones included (every one of them: the engine asks the index instead)."""
        rules = list(self.own_rules_at(t))
        if self.shared_at(t):
            rules.extend(_zone_rule(z) for z in self.shared_set.tagged if z.in_force(t))
        return tuple(rules)
