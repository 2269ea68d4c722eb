"""monitor.rules.alerting: which judged changes reach the record, and how."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from geofences.model import Circle
from monitor.domain import AlertKind, Fix, Severity
from monitor.rules.alerting import (
    Condition,
    Throttle,
    coalesce,
    opening_severity,
    plan_conditions,
    suspended,
)
from monitor.rules.book import Rule
from monitor.rules.engine import AlertChange, Change, Episode

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
RULE = Rule(
    "zone:z1", "z1", Circle(71.43, 51.13, 500), True, AlertKind.ZONE_EXIT, Severity.CRITICAL
)


def _fix(seq: int) -> Fix:
    t = T0 + timedelta(seconds=10 * seq)
    return Fix("BR-1", seq, t, 51.14, 71.43, 5.0, "gnss", t)


def _change(kind: Change, first: int, last: int) -> AlertChange:
    episode = Episode(RULE, _fix(first), _fix(last), last - first + 1, confirmed=True)
    return AlertChange(kind, "s-1", episode, _fix(last))


def test_several_updates_of_one_episode_are_one_with_the_latest_detail() -> None:
    changes = [_change(Change.UPDATE, 1, n) for n in (4, 5, 6)]
    planned = coalesce(changes)
    assert len(planned) == 1
    assert planned[0].detail["count"] == 6
    assert planned[0].detail["last_fix"]["seq"] == 6


def test_an_episode_opened_in_the_batch_opens_with_its_latest_detail() -> None:
    changes = [
        _change(Change.OPEN, 1, 3),
        _change(Change.UPDATE, 1, 4),
        _change(Change.UPDATE, 1, 5),
    ]
    planned = coalesce(changes)
    assert [p.change.change for p in planned] == [Change.OPEN]
    assert planned[0].detail["count"] == 5
    assert planned[0].detail["episode"] == changes[0].episode.key


def test_a_clear_is_never_folded_away() -> None:
    changes = [_change(Change.UPDATE, 1, 4), _change(Change.CLEAR, 1, 5)]
    assert [p.change.change for p in coalesce(changes)] == [Change.UPDATE, Change.CLEAR]


def test_the_throttle_writes_an_update_at_most_once_per_period() -> None:
    throttle = Throttle(every_s=10.0)
    assert throttle.due("a", 100.0)
    assert not throttle.due("a", 105.0)
    assert throttle.due("b", 105.0)  # per alert
    assert throttle.due("a", 110.0)


def _condition(kind: AlertKind, clears: bool, device: str = "BR-1") -> Condition:
    return Condition("s-1", device, kind, clears, T0, {"reason": "r"})


def test_conditions_open_add_and_clear_in_order() -> None:
    ids = (f"new-{i}" for i in itertools.count())
    items = [
        _condition(AlertKind.TAMPER, clears=False),
        _condition(AlertKind.TAMPER, clears=False),
        _condition(AlertKind.TAMPER, clears=True),
        _condition(AlertKind.TAMPER, clears=True),  # nothing open any more: nothing
        _condition(AlertKind.BATTERY, clears=False),
    ]
    opens, amends = plan_conditions(items, {}, lambda: next(ids))
    assert [(i, c.kind) for i, c in opens] == [
        ("new-0", AlertKind.TAMPER),
        ("new-1", AlertKind.BATTERY),
    ]
    assert [(a.alert_id, a.event) for a in amends] == [("new-0", "updated"), ("new-0", "cleared")]
    assert amends[1].cleared_at == T0


def test_a_condition_adds_to_the_alert_already_open() -> None:
    items = [
        _condition(AlertKind.SPOOFING, clears=False),
        _condition(AlertKind.SPOOFING, clears=True),
    ]
    opens, amends = plan_conditions(items, {0: "old", 1: "old"}, lambda: "never")
    assert opens == []
    assert [(a.alert_id, a.event) for a in amends] == [("old", "updated"), ("old", "cleared")]


def test_severity_and_suspension_of_an_opening_alert() -> None:
    assert opening_severity("battery", "serious", {"battery": "warning"}) == "warning"
    assert opening_severity("tamper", "critical", {"battery": "warning"}) == "critical"
    assert suspended({"a": 1}, None) == {"a": 1}
    assert suspended({"a": 1}, {"id": 7, "reason": "court"}) == {
        "a": 1,
        "suspended": {"id": 7, "reason": "court"},
    }
