"""monitor.rules.book: the status and zones in force for a subject at any instant."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from geofences.model import Circle
from monitor.domain import AlertKind, Severity, Status
from monitor.rules.book import (
    CURFEW_GRACE_S,
    PRESET_RADIUS_M,
    RuleBook,
    StatusOrder,
    ZoneEntry,
)
from monitor.rules.schedule import parse

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
HOME = (71.4304, 51.1282)  # (lon, lat), Astana
AIRPORT = Circle(71.4669, 51.0222, 1500.0)
MALL = Circle(71.4100, 51.0900, 300.0)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def order(
    status: Status, effective: float, recorded: float, home: tuple[float, float] | None = HOME
) -> StatusOrder:
    return StatusOrder(status, effective_at=day(effective), recorded_at=day(recorded), home=home)


def book(*orders: StatusOrder, **kwargs: object) -> RuleBook:
    return RuleBook("subject-1", "Asia/Almaty", statuses=orders, **kwargs)  # type: ignore[arg-type]


# --- status_at ---------------------------------------------------------------------------


def test_no_order_no_status() -> None:
    assert book().status_at(T0) is None
    assert book(order(Status.RED, 1, 0)).status_at(day(0.5)) is None


def test_an_order_is_in_force_from_its_effective_at_on() -> None:
    red = order(Status.RED, 0, 0)
    b = book(red)
    assert b.status_at(T0 - timedelta(microseconds=1)) is None
    assert b.status_at(T0) == red
    assert b.status_at(day(365)) == red


def test_a_later_order_takes_over_from_its_effective_at() -> None:
    red, yellow = order(Status.RED, 0, 0), order(Status.YELLOW, 10, 9)
    b = book(red, yellow)
    assert b.status_at(day(9.99)) == red
    assert b.status_at(day(10)) == yellow
    assert b.status_at(day(20)) == yellow


def test_an_order_effective_in_the_future_is_not_in_force_now() -> None:
    red, green = order(Status.RED, 0, 0), order(Status.GREEN, 10, 1)  # recorded on day 1
    b = book(red, green)
    assert b.status_at(day(1)) == red
    assert b.status_at(day(5)) == red
    assert b.status_at(day(10)) == green


def test_a_later_recorded_order_with_an_earlier_effective_at_cuts_off_the_future_part() -> None:
    red = order(Status.RED, 0, 0)
    yellow_from_day_10 = order(Status.YELLOW, 10, 1)  # recorded day 1, for day 10
    green_from_day_5 = order(Status.GREEN, 5, 2)  # recorded day 2, for day 5: replaces it
    b = book(red, yellow_from_day_10, green_from_day_5)

    assert b.status_at(day(4)) == red
    assert b.status_at(day(5)) == green_from_day_5
    assert b.status_at(day(12)) == green_from_day_5  # the yellow order never comes into force


def test_a_backdated_order_replaces_everything_from_its_effective_at() -> None:
    red, yellow = order(Status.RED, 0, 0), order(Status.YELLOW, 4, 4)
    blue_backdated = order(Status.BLUE, 2, 6)  # recorded on day 6 for day 2
    b = book(red, yellow, blue_backdated)
    assert b.status_at(day(1)) == red
    assert b.status_at(day(3)) == blue_backdated
    assert b.status_at(day(7)) == blue_backdated


def test_an_order_for_the_same_instant_replaces_the_earlier_recorded_one() -> None:
    red, yellow = order(Status.RED, 3, 0), order(Status.YELLOW, 3, 1)
    assert book(red, yellow).status_at(day(3)) == yellow


def test_replay_follows_recorded_at_not_the_order_of_the_tuple() -> None:
    red = order(Status.RED, 0, 0)
    yellow_from_day_10 = order(Status.YELLOW, 10, 1)
    green_from_day_5 = order(Status.GREEN, 5, 2)
    shuffled = book(green_from_day_5, red, yellow_from_day_10)
    assert shuffled.status_at(day(12)) == green_from_day_5
    # Recorded the other way round, the yellow order cuts the green one instead.
    green_first = order(Status.GREEN, 5, 1)
    yellow_last = order(Status.YELLOW, 10, 2)
    b = book(red, green_first, yellow_last)
    assert b.status_at(day(6)) == green_first
    assert b.status_at(day(12)) == yellow_last


def test_change_instants() -> None:
    zone = ZoneEntry("z1", "exclusion", MALL, valid_from=day(1), valid_until=day(3))
    b = book(order(Status.RED, 0, 0), order(Status.GREEN, 2, 1), zones=(zone,))
    assert b.change_instants() == [day(0), day(1), day(2), day(3)]


# --- rules_at ------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "radius"), [(Status.RED, 50.0), (Status.YELLOW, 500.0)])
def test_red_and_yellow_keep_the_subject_within_the_preset_radius(
    status: Status, radius: float
) -> None:
    assert PRESET_RADIUS_M[status] == radius
    (rule,) = book(order(status, 0, 0)).rules_at(day(1))
    assert rule.shape == Circle(HOME[0], HOME[1], radius)
    assert rule.must_be_inside
    assert rule.home
    assert (rule.kind, rule.severity) == (AlertKind.ZONE_EXIT, Severity.CRITICAL)
    assert rule.key == f"status:{status.value}"
    assert rule.schedule is None


def test_an_order_may_name_its_radius_and_home_zone() -> None:
    red = StatusOrder(Status.RED, T0, T0, home=HOME, radius_m=80.0, zone_id="home-7")
    (rule,) = book(red).rules_at(day(1))
    assert rule.shape == Circle(HOME[0], HOME[1], 80.0)
    assert (rule.key, rule.zone_id) == ("status:home-7", "home-7")


def test_red_without_a_home_sets_no_rule() -> None:
    assert book(order(Status.RED, 0, 0, home=None)).rules_at(day(1)) == ()


def _shared() -> tuple[ZoneEntry, ...]:
    tag = frozenset({"negative_test_required"})
    return (
        ZoneEntry("airport", "exclusion", AIRPORT, valid_from=day(-30), tags=tag),
        ZoneEntry("mall", "exclusion", MALL, valid_from=day(-30)),
        ZoneEntry("old-station", "exclusion", MALL, day(-30), valid_until=day(0.5), tags=tag),
        ZoneEntry("new-stadium", "exclusion", MALL, valid_from=day(5), tags=tag),
    )


def test_blue_keeps_the_subject_out_of_shared_zones_tagged_negative_test_required() -> None:
    b = book(order(Status.BLUE, 0, 0), shared=_shared())
    (rule,) = b.rules_at(day(1))
    assert (rule.key, rule.zone_id, rule.shape) == ("zone:airport", "airport", AIRPORT)
    assert not rule.must_be_inside
    assert not rule.home
    assert (rule.kind, rule.severity) == (AlertKind.ZONE_ENTER, Severity.CRITICAL)
    assert {r.key for r in b.rules_at(day(6))} == {"zone:airport", "zone:new-stadium"}


@pytest.mark.parametrize("status", [Status.RED, Status.YELLOW, Status.GREEN])
def test_shared_zones_apply_only_under_blue(status: Status) -> None:
    b = book(order(status, 0, 0), shared=_shared())
    assert all(r.key.startswith("status:") for r in b.rules_at(day(1)))


def test_green_sets_no_rule() -> None:
    assert book(order(Status.GREEN, 0, 0), shared=_shared()).rules_at(day(1)) == ()


def test_lifting_an_order_lifts_its_rule() -> None:
    b = book(order(Status.RED, 0, 0), order(Status.GREEN, 2, 2))
    assert [r.key for r in b.rules_at(day(1))] == ["status:red"]
    assert b.rules_at(day(3)) == ()


def test_a_zone_is_in_force_within_valid_from_inclusive_to_valid_until_exclusive() -> None:
    zone = ZoneEntry("z1", "exclusion", MALL, valid_from=day(1), valid_until=day(3))
    b = book(zones=(zone,))
    assert b.rules_at(day(1) - timedelta(microseconds=1)) == ()
    assert [r.key for r in b.rules_at(day(1))] == ["zone:z1"]
    assert [r.key for r in b.rules_at(day(3) - timedelta(microseconds=1))] == ["zone:z1"]
    assert b.rules_at(day(3)) == ()
    assert zone.in_force(day(2))
    assert not zone.in_force(day(3))


def test_an_open_ended_zone_stays_in_force() -> None:
    zone = ZoneEntry("z1", "inclusion", MALL, valid_from=day(1))
    assert [r.key for r in book(zones=(zone,)).rules_at(day(3650))] == ["zone:z1"]


def test_subject_zones_apply_whatever_the_status() -> None:
    zone = ZoneEntry("victim-home", "exclusion", MALL, valid_from=day(-1))
    b = book(order(Status.GREEN, 0, 0), zones=(zone,))
    assert [r.key for r in b.rules_at(day(1))] == ["zone:victim-home"]
    b = book(order(Status.YELLOW, 0, 0), zones=(zone,))
    assert {r.key for r in b.rules_at(day(1))} == {"zone:victim-home", "status:yellow"}


@pytest.mark.parametrize(
    ("kind", "scheduled", "inside", "alert", "home"),
    [
        ("home", False, True, AlertKind.ZONE_EXIT, True),
        ("home", True, True, AlertKind.CURFEW, True),
        ("inclusion", False, True, AlertKind.ZONE_EXIT, False),
        ("inclusion", True, True, AlertKind.CURFEW, False),
        ("exclusion", False, False, AlertKind.ZONE_ENTER, False),
        ("exclusion", True, False, AlertKind.ZONE_ENTER, False),
    ],
)
def test_zone_rules_by_kind(
    kind: str, scheduled: bool, inside: bool, alert: AlertKind, home: bool
) -> None:
    schedule = parse({"weekly": [{"from": "21:00", "to": "07:00"}]}) if scheduled else None
    zone = ZoneEntry("z1", kind, MALL, valid_from=day(0), schedule=schedule)
    (rule,) = book(zones=(zone,)).rules_at(day(1))
    assert (rule.must_be_inside, rule.kind, rule.home) == (inside, alert, home)
    if schedule is not None and inside:  # a curfew gets the default grace
        assert rule.schedule == replace(schedule, grace_s=CURFEW_GRACE_S)
    else:
        assert rule.schedule is schedule
    assert rule.severity is Severity.CRITICAL


def test_the_rules_asked_again_are_those_of_the_instant_asked() -> None:
    """own_rules_at keeps its last answer for the span it holds over: asked at every
    instant where something changes, just before and after it, in any order, it answers
    what working it out afresh does."""
    mall = ZoneEntry("mall", "exclusion", MALL, day(1), valid_until=day(3))
    airport = ZoneEntry("airport", "exclusion", AIRPORT, day(2))
    b = book(
        order(Status.YELLOW, 0, 0),
        order(Status.RED, 2, 1),
        order(Status.GREEN, 4, 4, home=None),
        zones=(mall, airport),
    )
    edges = [day(n) for n in (0, 1, 2, 3, 4)]
    tiny = timedelta(microseconds=1)
    instants = [t + d for t in edges for d in (-tiny, timedelta(0), tiny)] + [day(-9), day(9)]
    for t in [*instants, *reversed(instants), *instants[::3], *instants[1::2]]:
        assert b.own_rules_at(t) == b._own_rules_at(t), t
    assert [r.key for r in b.own_rules_at(day(2))] == ["zone:mall", "zone:airport", "status:red"]
    assert [r.key for r in b.own_rules_at(day(3))] == ["zone:airport", "status:red"]
