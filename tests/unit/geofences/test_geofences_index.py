"""geofences.index: a spatial index over shared zones, checked against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences.geodesy import offset
from geofences.index import Matches, ZoneIndex
from geofences.model import Area, Circle, Corridor, Shape, margin_m

PROPERTY = settings(database=None, deadline=None, max_examples=30)


def brute_force(
    zones: list[tuple[str, Shape]], lon: np.ndarray, lat: np.ndarray, within_m: float
) -> set[tuple[int, str]]:
    found = set()
    for zone_id, shape in zones:
        m = margin_m(shape, lon, lat)
        found |= {(int(i), zone_id) for i in np.flatnonzero(m <= within_m)}
    return found


def city_zones(seed: int, count: int = 300) -> list[tuple[str, Shape]]:
    """Circles, boxes and corridors scattered over about 40 km around Astana."""
    rng = np.random.default_rng(seed)
    zones: list[tuple[str, Shape]] = []
    for i in range(count):
        lon = 71.43 + rng.uniform(-0.3, 0.3)
        lat = 51.13 + rng.uniform(-0.2, 0.2)
        size = rng.uniform(0.001, 0.02)
        if i % 3 == 0:
            zones.append((f"c{i}", Circle(lon, lat, float(rng.uniform(20.0, 2000.0)))))
        elif i % 3 == 1:
            zones.append((f"a{i}", Area(shapely.box(lon, lat, lon + size, lat + size / 2))))
        else:
            line = shapely.LineString([(lon, lat), (lon + size, lat + size), (lon + 2 * size, lat)])
            zones.append((f"r{i}", Corridor(line, float(rng.uniform(10.0, 300.0)))))
    return zones


def fixes(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return 71.43 + rng.uniform(-0.35, 0.35, count), 51.13 + rng.uniform(-0.25, 0.25, count)


@pytest.mark.parametrize("within_m", [0.0, 50.0, 500.0])
def test_query_matches_brute_force(within_m: float) -> None:
    zones = city_zones(seed=1)
    index = ZoneIndex(zones)
    lon, lat = fixes(seed=2, count=3000)
    matches = index.query(lon, lat, within_m=within_m)
    got = {(p, z) for p, z, _ in matches}
    assert got == brute_force(zones, lon, lat, within_m)
    assert len(got) == len(matches)  # no pair twice
    assert np.all(matches.margin_m <= within_m)
    # Sorted by fix, then by margin.
    order = np.lexsort((matches.margin_m, matches.point_index))
    np.testing.assert_array_equal(order, np.arange(len(matches)))
    # The margins are those of the shapes.
    shapes = dict(zones)
    for p, z, m in list(matches)[:50]:
        assert m == pytest.approx(float(margin_m(shapes[z], lon[p], lat[p])), abs=1e-9)
    assert [str(z) for z in matches.zone_id] == [index.ids[i] for i in matches.zone_index]


def test_query_accepts_any_shape_and_flattens() -> None:
    index = ZoneIndex([("home", Circle(71.43, 51.13, 100.0))])
    matches = index.query(np.full((2, 2), 71.43), np.full((2, 2), 51.13))
    assert matches.point_index.tolist() == [0, 1, 2, 3]
    ((point, zone_id, margin),) = index.query(71.43, 51.13)
    assert (point, zone_id) == (0, "home")
    assert margin == pytest.approx(-100.0)


def test_across_the_antimeridian() -> None:
    home = Circle(179.999, 51.0, 500.0)
    east_half = shapely.box(179.9, -17.1, 180.0, -17.0)
    west_half = shapely.box(-180.0, -17.1, -179.9, -17.0)
    fiji = Area(shapely.MultiPolygon([east_half, west_half]))
    index = ZoneIndex([("home", home), ("fiji", fiji)])
    in_home_east = offset(179.999, 51.0, 300.0, 0.0)
    assert in_home_east[0] < 0.0
    lon = np.array([in_home_east[0], 179.9985, -179.95, 179.95, 180.0, -180.0, 179.0])
    lat = np.array([in_home_east[1], 51.0, -17.05, -17.05, -17.05, -17.05, -17.05])
    got = {(p, z) for p, z, _ in index.query(lon, lat)}
    expected = {(0, "home"), (1, "home"), (2, "fiji"), (3, "fiji"), (4, "fiji"), (5, "fiji")}
    assert got == expected
    # 600 m east of a home whose radius is 500 m: near, within 200 m, not inside.
    near = offset(179.999, 51.0, 600.0, 0.0)
    assert not index.query(near[0], near[1])
    assert [z for _, z, _ in index.query(near[0], near[1], within_m=200.0)] == ["home"]


def test_near_a_pole() -> None:
    station = Circle(0.0, 89.99, 2000.0)
    index = ZoneIndex([("station", station)])
    lon = np.array([0.0, 180.0, 90.0, -90.0, 45.0])
    lat = np.array([90.0, 89.995, 89.99, 89.99, 89.9])
    got = {p for p, _, _ in index.query(lon, lat)}
    assert got == set(np.flatnonzero(margin_m(station, lon, lat) <= 0.0).tolist())
    assert got == {0, 1, 2, 3}


@PROPERTY
@given(st.integers(0, 2**31), st.floats(0.0, 2000.0))
def test_random_cities(seed: int, within_m: float) -> None:
    zones = city_zones(seed=seed, count=40)
    lon, lat = fixes(seed=seed + 1, count=400)
    got = {(p, z) for p, z, _ in ZoneIndex(zones).query(lon, lat, within_m=within_m)}
    assert got == brute_force(zones, lon, lat, within_m)


def test_ten_thousand_zones_index() -> None:
    # Speed is measured by bench/, not asserted here: only correctness at this size.
    rng = np.random.default_rng(3)
    zones: list[tuple[str, Shape]] = []
    for i in range(10_000):
        lon = float(rng.uniform(-180.0, 180.0))
        lat = float(rng.uniform(-80.0, 80.0))
        if i % 2:
            zones.append((f"school-{i}", Circle(lon, lat, 300.0)))
        else:
            lon = min(lon, 179.9)
            zones.append((f"airport-{i}", Area(shapely.box(lon, lat, lon + 0.05, lat + 0.03))))
    index = ZoneIndex(zones)
    assert len(index) == 10_000
    school = zones[1][1]
    assert isinstance(school, Circle)
    assert [z for _, z, _ in index.query(school.lon, school.lat)] == ["school-1"]


def test_edge_cases() -> None:
    with pytest.raises(ValueError, match="more than once"):
        ZoneIndex([("a", Circle(0, 0, 1)), ("a", Circle(1, 1, 1))])
    empty = ZoneIndex([])
    assert len(empty.query([1.0], [2.0])) == 0
    index = ZoneIndex([("a", Circle(0.0, 0.0, 100.0))])
    assert index.shape("a") == Circle(0.0, 0.0, 100.0)
    assert index.ids == ("a",)
    matches = index.query([np.nan, 0.0, np.inf], [0.0, 0.0, 0.0])
    assert isinstance(matches, Matches)
    assert matches.point_index.tolist() == [1]
    with pytest.raises(ValueError, match="within_m"):
        index.query([0.0], [0.0], within_m=-1.0)
    assert len(index.query(np.empty(0), np.empty(0))) == 0
