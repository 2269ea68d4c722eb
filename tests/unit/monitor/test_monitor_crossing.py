"""monitor.rules.engine: crossings between sparse fixes (both ends on the allowed side, the
straight path through an exclusion zone or out of an inclusion zone)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences.geodesy import offset
from geofences.model import Area, Circle, segment_crosses, segment_depth_m
from monitor.domain import AlertKind, Fix
from monitor.rules.book import RuleBook, ZoneEntry
from monitor.rules.engine import AlertChange, Change, Debounce, SubjectState, evaluate, rejudge

PROPERTY = settings(database=None, deadline=None, max_examples=50)
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
SINCE = T0 - timedelta(days=1)
ASTANA = (71.4304, 51.1282)
DEBOUNCE = Debounce(confirm_fixes=3, confirm_s=120)


def fix(
    east: float,
    north: float,
    s: float,
    seq: int,
    *,
    acc: float = 5.0,
    device: str = "BR-1",
    src: str = "gnss",
) -> Fix:
    lon, lat = offset(ASTANA[0], ASTANA[1], east, north)
    t = T0 + timedelta(seconds=s)
    return Fix(device, seq, t, float(lat), float(lon), acc, src, t + timedelta(seconds=1))


def book(*zones: ZoneEntry) -> RuleBook:
    return RuleBook("subject-1", "Asia/Almaty", zones=zones)


BAR = ZoneEntry("bar", "exclusion", Circle(ASTANA[0], ASTANA[1], 200.0), SINCE)


def star(outer: float, inner: float, points: int = 5) -> Area:
    angles = np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    ring = [
        offset(ASTANA[0], ASTANA[1], r * math.sin(a), r * math.cos(a))
        for r, a in zip(radii, angles, strict=True)
    ]
    return Area(shapely.Polygon(ring))


def summary(changes: Sequence[AlertChange]) -> list[tuple[Change, bool, int | None]]:
    return [(c.change, c.episode.crossing, c.fix.seq) for c in changes]


def test_two_accurate_fixes_either_side_of_an_exclusion_zone() -> None:
    a, b = fix(-1000, 0, 0, 1), fix(1000, 0, 60, 2)
    state, changes = evaluate(book(BAR), SubjectState(), [a, b], DEBOUNCE)
    assert summary(changes) == [(Change.OPEN, True, 2), (Change.CLEAR, True, 2)]
    opened, cleared = changes
    ep = opened.episode
    assert opened.crossing
    assert (ep.first, ep.last, ep.count, ep.confirmed) == (a, b, 0, True)
    assert ep.rule.kind is AlertKind.ZONE_ENTER
    assert ep.worst_margin_m == pytest.approx(200.0, abs=1.0)
    assert ep.key.endswith("|crossing")
    assert ep.key.startswith("zone:bar|BR-1|1|")
    assert "crossing" in opened.reason
    assert cleared.reason.startswith("crossing")
    assert state.episodes == {}
    assert state.last_fixes == {"BR-1": b}


def test_a_crossing_across_two_uploads() -> None:
    a, b = fix(-1000, 0, 0, 1), fix(1000, 0, 60, 2)
    state, first = evaluate(book(BAR), SubjectState(), [a], DEBOUNCE)
    assert first == []
    _, changes = evaluate(book(BAR), state, [b], DEBOUNCE)
    assert summary(changes) == [(Change.OPEN, True, 2), (Change.CLEAR, True, 2)]


@pytest.mark.parametrize(
    ("acc", "confirmed"),
    [(5.0, True), (99.0, True), (101.0, False), (150.0, False)],
)
def test_confirmed_only_when_the_depth_exceeds_twice_the_accuracy(
    acc: float, confirmed: bool
) -> None:
    """The path goes 200 m deep: twice the accuracy must stay below that."""
    a, b = fix(-1000, 0, 0, 1, acc=acc), fix(1000, 0, 60, 2, acc=5.0)
    _, changes = evaluate(book(BAR), SubjectState(), [a, b], DEBOUNCE)
    assert bool(changes) is confirmed


def test_the_factor_is_configurable() -> None:
    a, b = fix(-1000, 0, 0, 1, acc=60.0), fix(1000, 0, 60, 2, acc=60.0)
    _, strict = evaluate(book(BAR), SubjectState(), [a, b], Debounce(crossing_factor=4.0))
    _, lax = evaluate(book(BAR), SubjectState(), [a, b], Debounce(crossing_factor=1.0))
    assert strict == []
    assert [c.change for c in lax] == [Change.OPEN, Change.CLEAR]


def test_a_path_wide_of_the_zone_is_no_crossing() -> None:
    a, b = fix(-1000, 250, 0, 1), fix(1000, 250, 60, 2)
    _, changes = evaluate(book(BAR), SubjectState(), [a, b], DEBOUNCE)
    assert changes == []


def test_fixes_of_two_devices_make_no_segment() -> None:
    a, b = fix(-1000, 0, 0, 1, device="BR-1"), fix(1000, 0, 60, 1, device="PH-1")
    _, changes = evaluate(book(BAR), SubjectState(), [a, b], DEBOUNCE)
    assert changes == []


def test_fixes_too_far_apart_in_time_with_a_gap_limit() -> None:
    a, b = fix(-1000, 0, 0, 1), fix(1000, 0, 3600, 2)
    _, limited = evaluate(book(BAR), SubjectState(), [a, b], Debounce(crossing_max_gap_s=900))
    _, unlimited = evaluate(book(BAR), SubjectState(), [a, b], Debounce())
    assert limited == []
    assert [c.change for c in unlimited] == [Change.OPEN, Change.CLEAR]


def test_a_possible_end_keeps_the_crossing_open_until_the_subject_complies() -> None:
    a = fix(-1000, 0, 0, 1)
    b = fix(215, 0, 30, 2, acc=20.0)  # 15 m outside the bar, uncertain: possible
    c = fix(100, 0, 40, 3)  # inside: a violation
    d = fix(1000, 0, 60, 4)  # far away: compliant
    state, changes = evaluate(book(BAR), SubjectState(), [a, b], DEBOUNCE)
    assert summary(changes) == [(Change.OPEN, True, 2)]
    assert state.episodes["zone:bar"].crossing
    state, changes = evaluate(book(BAR), state, [c, d], DEBOUNCE)
    assert summary(changes) == [(Change.UPDATE, True, 3), (Change.CLEAR, True, 4)]
    assert changes[0].episode.count == 1
    assert state.episodes == {}


def test_leaving_an_inclusion_zone_between_two_fixes_inside() -> None:
    district = ZoneEntry("district", "inclusion", star(3000.0, 1000.0), SINCE)
    # Two tips of the star: both inside, the straight path cuts across the notch.
    angle = 2 * math.pi / 5
    a = fix(0, 2500, 0, 1)
    b = fix(2500 * math.sin(angle), 2500 * math.cos(angle), 60, 2)
    _, changes = evaluate(book(district), SubjectState(), [a, b], DEBOUNCE)
    assert summary(changes) == [(Change.OPEN, True, 2), (Change.CLEAR, True, 2)]
    assert changes[0].episode.rule.kind is AlertKind.ZONE_EXIT
    assert "out of" in changes[0].reason


def test_a_home_circle_is_never_left_between_two_fixes_inside() -> None:
    home = ZoneEntry("home", "home", Circle(ASTANA[0], ASTANA[1], 100.0), SINCE)
    fixes = [fix(-90, 0, 0, 1), fix(90, 0, 30, 2), fix(0, 90, 60, 3), fix(0, -90, 90, 4)]
    _, changes = evaluate(book(home), SubjectState(), fixes, DEBOUNCE)
    assert changes == []


def test_a_beacon_fix_starts_no_segment_of_a_home_rule() -> None:
    district = ZoneEntry("home", "home", star(3000.0, 1000.0), SINCE)
    angle = 2 * math.pi / 5
    a = fix(0, 2500, 0, 1, src="beacon")
    b = fix(2500 * math.sin(angle), 2500 * math.cos(angle), 60, 2)
    _, changes = evaluate(book(district), SubjectState(), [a, b], DEBOUNCE)
    assert changes == []


def test_a_crossing_inside_a_late_upload_is_late() -> None:
    state, _ = evaluate(book(BAR), SubjectState(), [fix(3000, 3000, 600, 9)], DEBOUNCE)
    a, b = fix(-1000, 0, 0, 1), fix(1000, 0, 60, 2)
    new_state, changes = evaluate(book(BAR), state, [a, b], DEBOUNCE)
    assert [(c.change, c.late) for c in changes] == [(Change.OPEN, True), (Change.CLEAR, True)]
    assert new_state == state


def test_rejudge_finds_crossings_too() -> None:
    a, b = fix(-1000, 0, 0, 1), fix(1000, 0, 60, 2)
    _, changes = rejudge(book(BAR), [a, b], frozenset({"zone:bar"}), DEBOUNCE)
    assert [c.change for c in changes] == [Change.OPEN, Change.CLEAR]
    _, none = rejudge(book(BAR), [a, b], frozenset({"zone:other"}), DEBOUNCE)
    assert none == []


def test_a_rule_not_in_force_at_the_first_fix_makes_no_crossing() -> None:
    later = ZoneEntry(
        "bar", "exclusion", Circle(ASTANA[0], ASTANA[1], 200.0), T0 + timedelta(seconds=30)
    )
    a, b = fix(-1000, 0, 0, 1), fix(1000, 0, 60, 2)
    _, changes = evaluate(book(later), SubjectState(), [a], DEBOUNCE)
    assert changes == []
    state, _ = evaluate(book(later), SubjectState(), [a], DEBOUNCE)
    _, changes = evaluate(book(later), state, [b], DEBOUNCE)
    assert changes == []


# --- properties ----------------------------------------------------------------------------

POINT = st.tuples(st.floats(-1500.0, 1500.0), st.floats(-1500.0, 1500.0))


@PROPERTY
@given(st.lists(st.tuples(POINT, st.floats(1.0, 60.0)), min_size=2, max_size=10))
def test_every_crossing_is_a_deep_straight_path_between_two_compliant_fixes(
    steps: list[tuple[tuple[float, float], float]],
) -> None:
    park = ZoneEntry("park", "exclusion", star(600.0, 250.0), SINCE)
    fixes = [fix(e, n, 30 * i, i + 1, acc=acc) for i, ((e, n), acc) in enumerate(steps)]
    _, changes = evaluate(book(park), SubjectState(), fixes, Debounce(1, 120))
    for c in changes:
        if not c.episode.crossing or c.change is not Change.OPEN:
            continue
        a, b = c.episode.first, c.episode.last
        assert fixes.index(b) == fixes.index(a) + 1
        shape = park.shape
        assert bool(segment_crosses(shape, a.lon, a.lat, b.lon, b.lat))
        depth = float(segment_depth_m(shape, a.lon, a.lat, b.lon, b.lat, inside=True))
        assert depth > 2 * max(a.acc, b.acc)
        assert c.episode.worst_margin_m == pytest.approx(depth)


@PROPERTY
@given(
    st.lists(st.tuples(POINT, st.floats(1.0, 60.0)), min_size=1, max_size=10),
    st.lists(st.integers(1, 4), max_size=10),
)
def test_splitting_fixes_into_uploads_changes_nothing(
    steps: list[tuple[tuple[float, float], float]], cuts: list[int]
) -> None:
    park = ZoneEntry("park", "exclusion", star(600.0, 250.0), SINCE)
    b = book(park)
    fixes = [fix(e, n, 30 * i, i + 1, acc=acc) for i, ((e, n), acc) in enumerate(steps)]
    whole_state, whole = evaluate(b, SubjectState(), fixes, DEBOUNCE)
    state, pieces, start = SubjectState(), [], 0
    for size in [*cuts, len(fixes)]:
        state, changes = evaluate(b, state, fixes[start : start + size], DEBOUNCE)
        pieces += changes
        start += size
    assert pieces == whole
    assert state == whole_state
