"""Shared zone sets (every airport) under a blue status: indexed once, asked through the
index, and judged exactly as if every zone were measured."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences.geodesy import offset
from geofences.model import Area, Circle
from monitor.domain import AlertKind, Fix, Status
from monitor.rules import engine
from monitor.rules.book import (
    NEGATIVE_TEST_TAG,
    SHARED_INDEX_MIN,
    ProximityEntry,
    RuleBook,
    SharedZones,
    StatusOrder,
    ZoneEntry,
)
from monitor.rules.engine import Change, Debounce, SubjectState, evaluate

PROPERTY = settings(database=None, deadline=None, max_examples=30)
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
SINCE = T0 - timedelta(days=10)
ASTANA = (71.4304, 51.1282)
TAG = frozenset({NEGATIVE_TEST_TAG})


def airports(count: int = 200, seed: int = 5) -> SharedZones:
    """Airports (boxes) and venues (circles) within 20 km of Astana, some edited, some
    not tagged, one not in force yet."""
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(count):
        lon, lat = offset(ASTANA[0], ASTANA[1], *rng.uniform(-20_000, 20_000, 2))
        if i % 2:
            shape: Circle | Area = Circle(float(lon), float(lat), float(rng.uniform(100, 1500)))
        else:
            d = float(rng.uniform(0.005, 0.03))
            shape = Area(shapely.box(lon, lat, lon + d, lat + d / 2))
        tags = TAG if i % 7 else frozenset()
        entries.append(ZoneEntry(f"z{i}", "exclusion", shape, SINCE, tags=tags))
    # An airport whose boundary was edited: two versions of one zone id.
    edit = T0 + timedelta(minutes=5)
    first = Circle(ASTANA[0], ASTANA[1], 300.0)
    moved = Circle(*offset(ASTANA[0], ASTANA[1], 5000.0, 0.0), 300.0)
    entries.append(ZoneEntry("edited", "exclusion", first, SINCE, valid_until=edit, tags=TAG))
    entries.append(ZoneEntry("edited", "exclusion", moved, edit, tags=TAG))
    return SharedZones(entries)


SHARED = airports()
AIRPORT = next(z for z in SHARED.tagged if isinstance(z.shape, Area))


def blue_book(shared: tuple[ZoneEntry, ...] = SHARED) -> RuleBook:
    return RuleBook(
        "subject-1",
        "Asia/Almaty",
        statuses=(StatusOrder(Status.BLUE, SINCE, SINCE),),
        shared=shared,
    )


def track(seed: int, count: int) -> list[Fix]:
    """A walk that visits zones: from one zone centre to the next, with noise."""
    rng = np.random.default_rng(seed)
    fixes = []
    for i in range(count):
        target = SHARED.tagged[int(rng.integers(len(SHARED.tagged)))].shape
        if isinstance(target, Circle):
            lon, lat = target.lon, target.lat
        else:
            c = target.geometry.centroid
            lon, lat = c.x, c.y
        lon, lat = offset(lon, lat, *rng.normal(0, 400, 2))
        t = T0 + timedelta(seconds=40 * i)
        acc = float(rng.choice([3.0, 10.0, 60.0, 800.0]))
        fixes.append(Fix("BR-1", i + 1, t, float(lat), float(lon), acc, "gnss", t))
    return fixes


def test_shared_zones_hold_their_tagged_entries_and_one_index() -> None:
    assert len(SHARED.tagged) == sum(1 for z in SHARED if NEGATIVE_TEST_TAG in z.tags)
    assert SHARED.spatial_index() is SHARED.spatial_index()
    one, two = blue_book(), blue_book()
    assert one.shared_set is SHARED
    assert two.shared_set.spatial_index() is one.shared_set.spatial_index()
    assert SHARED.positions("edited") == (len(SHARED.tagged) - 2, len(SHARED.tagged) - 1)
    assert SHARED.positions("nowhere") == ()
    # A plain tuple still works: the book makes its own set, once.
    plain = blue_book(tuple(SHARED))
    assert plain.shared_set is plain.shared_set
    assert plain.shared_set == SHARED
    assert plain == one  # equality is about the zones, not how they are held


def test_rules_at_still_lists_every_shared_rule_under_blue() -> None:
    b = blue_book()
    keys = [r.key for r in b.rules_at(T0)]
    assert len(keys) == len(SHARED.tagged) - 1  # one version of "edited" at a time
    assert b.own_rules_at(T0) == ()
    assert b.shared_at(T0)
    assert not b.shared_at(SINCE - timedelta(seconds=1))


@PROPERTY
@given(st.integers(0, 2**31), st.integers(1, 12))
def test_the_index_decides_as_measuring_every_zone_would(seed: int, count: int) -> None:
    assert len(SHARED.tagged) >= SHARED_INDEX_MIN
    fixes = track(seed, count)
    b = blue_book()
    indexed = evaluate(b, SubjectState(), fixes, Debounce(2, 60))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "SHARED_INDEX_MIN", 10**9)
        measured = evaluate(b, SubjectState(), fixes, Debounce(2, 60))
    assert indexed == measured


def test_an_episode_of_a_shared_zone_clears_when_the_subject_leaves_it() -> None:
    airport = AIRPORT
    assert isinstance(airport.shape, Area)
    c = airport.shape.geometry.centroid
    inside = [
        Fix("BR-1", i, T0 + timedelta(seconds=10 * i), c.y, c.x, 5.0, "gnss", T0) for i in range(3)
    ]
    far = offset(ASTANA[0], ASTANA[1], 40_000.0, 40_000.0)
    away = Fix("BR-1", 9, T0 + timedelta(seconds=60), float(far[1]), float(far[0]), 5.0, "gnss", T0)
    state, changes = evaluate(blue_book(), SubjectState(), inside, Debounce(3, 120))
    assert [(ch.change, ch.episode.rule.key, ch.episode.rule.kind) for ch in changes] == [
        (Change.OPEN, f"zone:{airport.zone_id}", AlertKind.ZONE_ENTER)
    ]
    state, changes = evaluate(blue_book(), state, [away], Debounce(3, 120))
    key = f"zone:{airport.zone_id}"
    mine = [(ch.change, ch.reason) for ch in changes if ch.episode.rule.key == key]
    assert mine == [(Change.CLEAR, "complied again")]
    # The long straight path on the way crossed other zones: each of those is a crossing.
    assert all(ch.episode.crossing for ch in changes if ch.episode.rule.key != key)


def test_a_crossing_of_a_shared_zone_is_found_through_the_index() -> None:
    airport = AIRPORT
    assert isinstance(airport.shape, Area)
    west, south, east, north = airport.shape.geometry.bounds
    mid = (south + north) / 2
    a = Fix("BR-1", 1, T0, mid, west - 0.02, 5.0, "gnss", T0)
    b = Fix("BR-1", 2, T0 + timedelta(seconds=60), mid, east + 0.02, 5.0, "gnss", T0)
    _, changes = evaluate(blue_book(), SubjectState(), [a, b], Debounce())
    crossed = {ch.episode.rule.key for ch in changes if ch.episode.crossing}
    assert f"zone:{airport.zone_id}" in crossed


def test_the_version_in_force_at_each_fix() -> None:
    at_old = Fix("BR-1", 1, T0, ASTANA[1], ASTANA[0], 5.0, "gnss", T0)
    moved = offset(ASTANA[0], ASTANA[1], 5000.0, 0.0)
    later = T0 + timedelta(minutes=6)
    at_new = Fix("BR-1", 2, later, float(moved[1]), float(moved[0]), 5.0, "gnss", later)
    at_old_later = Fix(
        "BR-1", 3, later + timedelta(seconds=5), ASTANA[1], ASTANA[0], 5.0, "gnss", later
    )
    _, changes = evaluate(
        blue_book(), SubjectState(), [at_old, at_new, at_old_later], Debounce(1, 60)
    )
    assert [(ch.change, ch.fix.seq) for ch in changes if ch.episode.rule.key == "zone:edited"] == [
        (Change.OPEN, 1),
        (Change.UPDATE, 2),
        (Change.CLEAR, 3),
    ]


def test_proximity_entries_in_the_book() -> None:
    entry = ProximityEntry("p1", "PH-VICTIM", 500.0, SINCE, valid_until=T0)
    b = RuleBook("subject-1", "Asia/Almaty", proximity=(entry,))
    (rule,) = b.proximity_at(T0 - timedelta(seconds=1))
    assert (rule.key, rule.other_device_id, rule.distance_m, rule.kind) == (
        "proximity:p1",
        "PH-VICTIM",
        500.0,
        AlertKind.PROXIMITY,
    )
    assert b.proximity_at(T0) == ()
    assert b.rules_at(SINCE) == ()  # not a zone rule
    assert T0 in b.change_instants()
    with pytest.raises(ValueError, match="distance_m"):
        ProximityEntry("p2", "PH", 0.0, SINCE)
