"""monitor.rules.engine.evaluate_proximity: a mobile exclusion zone around another device
(a victim's phone), judged whenever either side reports, against the other's latest fix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences.geodesy import offset
from monitor.domain import AlertKind, Fix, Severity
from monitor.rules.book import ProximityEntry, ProximityRule, RuleBook
from monitor.rules.engine import (
    Change,
    Debounce,
    Decision,
    ProximityState,
    evaluate_proximity,
    proximity_decision,
)
from monitor.rules.schedule import parse

PROPERTY = settings(database=None, deadline=None, max_examples=60)
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
ASTANA = (71.4304, 51.1282)
VICTIM = "PH-VICTIM"
RULE = ProximityRule("proximity:p1", "p1", VICTIM, 500.0)
DEBOUNCE = Debounce(confirm_fixes=2, confirm_s=120)


def fix(device: str, east: float, s: float, seq: int, acc: float = 5.0) -> Fix:
    lon, lat = offset(ASTANA[0], ASTANA[1], east, 0.0)
    t = T0 + timedelta(seconds=s)
    return Fix(device, seq, t, float(lat), float(lon), acc, "gnss", t)


def book(**kw: object) -> RuleBook:
    entry = ProximityEntry("p1", VICTIM, 500.0, T0 - timedelta(days=1), **kw)  # type: ignore[arg-type]
    return RuleBook("subject-1", "Asia/Almaty", proximity=(entry,))


@pytest.mark.parametrize(
    ("east", "acc", "expected"),
    [
        (400.0, 5.0, Decision.VIOLATION),
        (600.0, 5.0, Decision.COMPLIANT),
        (495.0, 5.0, Decision.POSSIBLE),  # 495 + 10 of accuracy reaches 505
        (505.0, 5.0, Decision.POSSIBLE),
        (510.0, 5.0, Decision.COMPLIANT),
    ],
)
def test_decisions_grant_both_accuracies(east: float, acc: float, expected: Decision) -> None:
    look = proximity_decision(RULE, fix("BR-1", east, 0, 1, acc), fix(VICTIM, 0, 0, 1, acc), 120)
    assert look.decision is expected
    assert look.distance_m == pytest.approx(east, abs=0.01)
    assert look.age_s == 0


def test_unknown_without_a_fix_or_with_a_stale_one() -> None:
    subject = fix("BR-1", 100, 300, 1)
    assert proximity_decision(RULE, subject, None, 120).decision is None
    assert proximity_decision(RULE, None, fix(VICTIM, 0, 0, 1), 120).decision is None
    stale = proximity_decision(RULE, subject, fix(VICTIM, 0, 0, 1), 120)
    assert (stale.decision, stale.age_s) == (None, 300)
    assert "300 s apart" in stale.reason


def test_either_side_reporting_confirms_the_episode_and_moving_away_clears_it() -> None:
    b = book()
    state = ProximityState()
    victim = fix(VICTIM, 0, 0, 1)
    # The subject comes close: one look.
    state, changes = evaluate_proximity(
        b, state, fix("BR-1", 200, 5, 1), {VICTIM: victim}, DEBOUNCE
    )
    assert changes == []
    assert state.last["proximity:p1"].decision is Decision.VIOLATION
    # The victim reports next: a second look with the subject's latest fix confirms.
    subject_latest = fix("BR-1", 200, 5, 1)
    victim2 = fix(VICTIM, 50, 20, 2)
    state, changes = evaluate_proximity(b, state, subject_latest, {VICTIM: victim2}, DEBOUNCE)
    assert [c.change for c in changes] == [Change.OPEN]
    ep = changes[0].episode
    assert (ep.rule.kind, ep.rule.severity, ep.rule.key, ep.count) == (
        AlertKind.PROXIMITY,
        Severity.CRITICAL,
        "proximity:p1",
        2,
    )
    assert ep.first == subject_latest  # the alert's position is the subject's
    assert ep.worst_margin_m == pytest.approx(500 - 150, abs=0.1)
    # The same pair again is not a new look.
    again, changes = evaluate_proximity(b, state, subject_latest, {VICTIM: victim2}, DEBOUNCE)
    assert changes == []
    assert again.episodes == state.episodes
    # Away: cleared.
    state, changes = evaluate_proximity(
        b, state, fix("BR-1", 3000, 40, 2), {VICTIM: victim2}, DEBOUNCE
    )
    assert [(c.change, c.reason) for c in changes] == [(Change.CLEAR, "complied again")]
    assert state.episodes == {}


def test_a_stale_other_side_neither_grows_nor_ends_the_episode() -> None:
    b = book()
    victim = fix(VICTIM, 0, 0, 1)
    state, _ = evaluate_proximity(
        b, ProximityState(), fix("BR-1", 100, 1, 1), {VICTIM: victim}, DEBOUNCE
    )
    state, changes = evaluate_proximity(
        b, state, fix("BR-1", 100, 600, 2), {VICTIM: victim}, DEBOUNCE
    )
    assert changes == []
    assert state.episodes["proximity:p1"].count == 1
    assert state.last["proximity:p1"].decision is None
    # No fix of the victim at all: unknown too.
    state, changes = evaluate_proximity(b, state, fix("BR-1", 100, 700, 3), {}, DEBOUNCE)
    assert changes == []
    assert state.episodes["proximity:p1"].count == 1


def test_a_rule_that_ends_clears_its_episode() -> None:
    b = book(valid_until=T0 + timedelta(seconds=100))
    victim = fix(VICTIM, 0, 0, 1)
    state = ProximityState()
    for i in range(2):
        state, changes = evaluate_proximity(
            b, state, fix("BR-1", 100, i, i + 1), {VICTIM: victim}, DEBOUNCE
        )
    assert [c.change for c in changes] == [Change.OPEN]
    state, changes = evaluate_proximity(
        b, state, fix("BR-1", 100, 200, 9), {VICTIM: victim}, DEBOUNCE
    )
    assert [(c.change, c.reason) for c in changes] == [(Change.CLEAR, "rule no longer in force")]


def test_a_schedule_limits_the_rule() -> None:
    # 21:00-07:00 in Almaty (+05): T0 is 14:00 there.
    b = book(schedule=parse({"weekly": [{"from": "21:00", "to": "07:00"}]}))
    victim = fix(VICTIM, 0, 0, 1)
    state, _ = evaluate_proximity(
        b, ProximityState(), fix("BR-1", 100, 1, 1), {VICTIM: victim}, DEBOUNCE
    )
    assert state.last == {}


def test_no_subject_fix_no_decision() -> None:
    state = ProximityState()
    assert evaluate_proximity(book(), state, None, {VICTIM: fix(VICTIM, 0, 0, 1)}) == (state, [])


@PROPERTY
@given(st.lists(st.tuples(st.floats(0, 2000), st.booleans()), min_size=1, max_size=12))
def test_opens_and_clears_alternate(steps: list[tuple[float, bool]]) -> None:
    b = book()
    state = ProximityState()
    subject = fix("BR-1", 5000, 0, 0)
    victim = fix(VICTIM, 0, 0, 0)
    opened = False
    for i, (east, subject_moves) in enumerate(steps):
        if subject_moves:
            subject = fix("BR-1", east, 10 * (i + 1), i + 1)
        else:
            victim = fix(VICTIM, 5000 - east, 10 * (i + 1), i + 1)
        state, changes = evaluate_proximity(b, state, subject, {VICTIM: victim}, DEBOUNCE)
        for c in changes:
            if c.change is Change.OPEN:
                assert not opened
                opened = True
            elif c.change is Change.CLEAR:
                assert opened
                opened = False
            else:
                assert opened
