"""geofences.model.segment_depth_m and segment_leaves, geofences.index.ZoneIndex.crossed:
the straight path between two sparse fixes, against brute force along the path."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences.geodesy import distance_m, offset
from geofences.index import Crossings, ZoneIndex
from geofences.model import (
    Area,
    Circle,
    Corridor,
    Shape,
    margin_m,
    segment_crosses,
    segment_depth_m,
    segment_leaves,
)

PROPERTY = settings(database=None, deadline=None, max_examples=40)
ASTANA = (71.4304, 51.1282)


def dense_extreme(
    shape: Shape, a: tuple[float, float], b: tuple[float, float], inside: bool, n: int = 20001
) -> float:
    """max of ∓margin along the lon/lat-straight path, by brute force."""
    b_lon = a[0] + ((b[0] - a[0] + 180.0) % 360.0 - 180.0)
    s = np.linspace(0.0, 1.0, n)
    m = margin_m(shape, a[0] + s * (b_lon - a[0]), a[1] + s * (b[1] - a[1]))
    return float(np.max(-m if inside else m))


def at(east: float, north: float, centre: tuple[float, float] = ASTANA) -> tuple[float, float]:
    lon, lat = offset(centre[0], centre[1], east, north)
    return float(lon), float(lat)


def star(centre: tuple[float, float], outer: float, inner: float, points: int = 7) -> Area:
    """A star: concave, so a straight path between two inside points can leave it."""
    angles = np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    ring = [at(r * np.sin(a), r * np.cos(a), centre) for r, a in zip(radii, angles, strict=True)]
    return Area(shapely.Polygon(ring))


# --- segment_depth_m -----------------------------------------------------------------------


@pytest.mark.parametrize("lat", [0.0, 43.0, 51.0, 66.0])
def test_depth_into_a_circle_is_exact(lat: float) -> None:
    centre = (71.43, lat)
    home = Circle(centre[0], centre[1], 500.0)
    a, b = at(-2000.0, 300.0, centre), at(2000.0, 300.0, centre)
    depth = float(segment_depth_m(home, a[0], a[1], b[0], b[1], inside=True))
    # The ends are 300 m north of the centre along geodesics; the lon/lat-straight path
    # between them sags by up to a metre at high latitudes.
    assert depth == pytest.approx(200.0, abs=1.0)
    assert depth == pytest.approx(dense_extreme(home, a, b, inside=True), abs=0.01)
    # Wide of it: negative, by the distance of closest approach.
    c, d = at(-2000.0, 700.0, centre), at(2000.0, 700.0, centre)
    assert float(segment_depth_m(home, c[0], c[1], d[0], d[1], inside=True)) == pytest.approx(
        -200.0, abs=1.0
    )


def test_depth_out_of_a_circle_is_the_larger_end() -> None:
    home = Circle(ASTANA[0], ASTANA[1], 500.0)
    a, b = at(-100.0, 0.0), at(300.0, 0.0)
    assert float(segment_depth_m(home, a[0], a[1], b[0], b[1], inside=False)) == pytest.approx(
        -200.0, abs=1e-3
    )


@PROPERTY
@given(
    st.floats(-3000.0, 3000.0),
    st.floats(-3000.0, 3000.0),
    st.floats(-3000.0, 3000.0),
    st.floats(-3000.0, 3000.0),
    st.booleans(),
    st.sampled_from([0.0, 43.0, 66.0, -35.0]),
)
def test_sampled_depth_is_a_tight_lower_bound(
    e1: float, n1: float, e2: float, n2: float, inside: bool, lat: float
) -> None:
    centre = (71.43, lat)
    shape = star(centre, 1500.0, 600.0)
    a, b = at(e1, n1, centre), at(e2, n2, centre)
    depth = float(segment_depth_m(shape, a[0], a[1], b[0], b[1], inside=inside))
    truth = dense_extreme(shape, a, b, inside)
    length = float(distance_m(a[0], a[1], b[0], b[1]))
    # The brute force is itself a lower bound: its samples are length / 20,000 apart,
    # and the margin moves at most a metre per metre, so the true extreme may exceed it
    # by up to one spacing (a case 1.9 cm above it was found: 638, 1.125 to 0, 1,349).
    assert depth <= truth + length / 20_000 + 1e-6
    assert depth >= truth - length / 1500.0 - 0.01


def test_depth_broadcasts_and_gives_nan_for_nan() -> None:
    shape = star(ASTANA, 1500.0, 600.0)
    out = segment_depth_m(shape, [ASTANA[0], np.nan], ASTANA[1], ASTANA[0], ASTANA[1], inside=True)
    assert out.shape == (2,)
    assert out[0] > 500.0
    assert np.isnan(out[1])


def test_depth_into_a_corridor() -> None:
    road = Corridor(shapely.LineString([at(0.0, -3000.0), at(0.0, 3000.0)]), 100.0)
    a, b = at(-1000.0, 0.0), at(1000.0, 0.0)
    depth = float(segment_depth_m(road, a[0], a[1], b[0], b[1], inside=True))
    assert depth == pytest.approx(100.0, abs=2.0)
    assert depth <= 100.0 + 1e-6


# --- segment_leaves ------------------------------------------------------------------------


def test_a_path_between_two_points_of_a_star_can_leave_it() -> None:
    shape = star(ASTANA, 1500.0, 600.0)
    tip1 = at(0.0, 1300.0)  # in the north tip
    tip2 = at(1300.0 * np.sin(2 * np.pi / 7), 1300.0 * np.cos(2 * np.pi / 7))  # the next tip
    near = at(0.0, 100.0)
    assert float(margin_m(shape, *tip1)) < 0.0
    assert float(margin_m(shape, *tip2)) < 0.0
    result = segment_leaves(
        shape, [tip1[0], tip1[0]], [tip1[1], tip1[1]], [tip2[0], near[0]], [tip2[1], near[1]]
    )
    assert result.tolist() == [True, False]


def test_a_hole_is_outside() -> None:
    outer = [at(e, n) for e, n in [(-2000, -2000), (2000, -2000), (2000, 2000), (-2000, 2000)]]
    hole = [at(e, n) for e, n in [(-300, -300), (300, -300), (300, 300), (-300, 300)]]
    park = Area(shapely.Polygon(outer, [hole]))
    a, b = at(-1000.0, 0.0), at(1000.0, 0.0)
    c, d = at(-1000.0, 1000.0), at(1000.0, 1000.0)
    got = segment_leaves(park, [a[0], c[0]], [a[1], c[1]], [b[0], d[0]], [b[1], d[1]])
    assert got.tolist() == [True, False]


def test_leaving_a_circle_or_a_corridor() -> None:
    home = Circle(ASTANA[0], ASTANA[1], 500.0)
    a, b, c = at(-400.0, 0.0), at(400.0, 0.0), at(600.0, 0.0)
    got = segment_leaves(home, [a[0], a[0]], [a[1], a[1]], [b[0], c[0]], [b[1], c[1]])
    assert got.tolist() == [False, True]
    # An L-shaped road: cutting the corner leaves it, following it does not.
    road = Corridor(shapely.LineString([at(0.0, 0.0), at(2000.0, 0.0), at(2000.0, 2000.0)]), 50.0)
    p, q, r = at(1000.0, 0.0), at(2000.0, 1000.0), at(1500.0, 0.0)
    got = segment_leaves(road, [p[0], p[0]], [p[1], p[1]], [q[0], r[0]], [q[1], r[1]])
    assert got.tolist() == [True, False]


@PROPERTY
@given(
    st.floats(-1800.0, 1800.0),
    st.floats(-1800.0, 1800.0),
    st.floats(-1800.0, 1800.0),
    st.floats(-1800.0, 1800.0),
)
def test_leaves_agrees_with_brute_force_on_a_star(
    e1: float, n1: float, e2: float, n2: float
) -> None:
    shape = star(ASTANA, 1500.0, 600.0)
    a, b = at(e1, n1), at(e2, n2)
    truth = dense_extreme(shape, a, b, inside=False)
    got = bool(segment_leaves(shape, a[0], a[1], b[0], b[1]))
    if truth > 0.01:
        assert got
    elif truth < -0.01:
        assert not got


# --- ZoneIndex.crossed ---------------------------------------------------------------------


def town(seed: int, count: int) -> list[tuple[str, Shape]]:
    rng = np.random.default_rng(seed)
    zones: list[tuple[str, Shape]] = []
    for i in range(count):
        c = at(float(rng.uniform(-20_000, 20_000)), float(rng.uniform(-20_000, 20_000)))
        if i % 2:
            zones.append((f"c{i}", Circle(c[0], c[1], float(rng.uniform(50.0, 2000.0)))))
        else:
            zones.append((f"s{i}", star(c, float(rng.uniform(500, 3000)), 300.0, 5)))
    return zones


@PROPERTY
@given(st.integers(0, 2**31))
def test_crossed_matches_brute_force(seed: int) -> None:
    zones = town(seed, 30)
    rng = np.random.default_rng(seed + 1)
    starts = [
        at(float(rng.uniform(-22e3, 22e3)), float(rng.uniform(-22e3, 22e3))) for _ in range(60)
    ]
    ends = [at(float(rng.uniform(-22e3, 22e3)), float(rng.uniform(-22e3, 22e3))) for _ in range(60)]
    lon1 = np.array([s[0] for s in starts])
    lat1 = np.array([s[1] for s in starts])
    lon2 = np.array([e[0] for e in ends])
    lat2 = np.array([e[1] for e in ends])
    found = ZoneIndex(zones).crossed(lon1, lat1, lon2, lat2)
    assert isinstance(found, Crossings)
    got = {(int(s), str(z)) for s, z in zip(found.segment_index, found.zone_id, strict=True)}
    truth = set()
    for zone_id, shape in zones:
        hit = segment_crosses(shape, lon1, lat1, lon2, lat2)
        truth |= {(int(i), zone_id) for i in np.flatnonzero(hit)}
    assert got == truth
    assert len(got) == len(found)


def test_crossed_across_the_antimeridian() -> None:
    home = Circle(179.999, 51.0, 500.0)
    index = ZoneIndex([("home", home), ("far", Circle(0.0, 0.0, 10.0))])
    west = offset(home.lon, home.lat, -3000.0, 0.0)
    east = offset(home.lon, home.lat, 3000.0, 0.0)
    found = index.crossed([west[0]], [west[1]], [east[0]], [east[1]])
    assert found.zone_id.tolist() == ["home"]
    assert len(index.crossed([np.nan], [0.0], [1.0], [1.0])) == 0
    assert len(ZoneIndex([]).crossed([0.0], [0.0], [1.0], [1.0])) == 0
