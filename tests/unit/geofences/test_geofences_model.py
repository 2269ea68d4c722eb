"""geofences.model: shapes, signed margins, bounds and segment crossings.

Margins of areas and corridors are checked against a slow, independent reference: the
geodesic distance (pyproj.Geod) to each lon/lat-straight edge, minimised along the edge
by golden-section search.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from pyproj import Geod

from geofences.geodesy import destination, distance_m, offset
from geofences.model import Area, Circle, Corridor, bounds, margin_m, margins_m, segment_crosses

GEOD = Geod(ellps="WGS84")
PROPERTY = settings(database=None, deadline=None, max_examples=40)
Floats = NDArray[np.float64]


def reference_distance(lon: Floats, lat: Floats, edges: Floats) -> Floats:
    """Geodesic distance from each point to the nearest of ``edges`` (k × 4: lon/lat of A
    and B), minimising along each edge by golden-section search."""
    a_lon, a_lat, b_lon, b_lat = (edges[:, i][None, :] for i in range(4))
    shape = (lon.size, edges.shape[0])
    p_lon = np.broadcast_to(lon[:, None], shape).ravel()
    p_lat = np.broadcast_to(lat[:, None], shape).ravel()

    def dist(t: Floats) -> Floats:
        q_lon = np.broadcast_to(a_lon + t * (b_lon - a_lon), shape).ravel()
        q_lat = np.broadcast_to(a_lat + t * (b_lat - a_lat), shape).ravel()
        return np.asarray(GEOD.inv(p_lon, p_lat, q_lon, q_lat)[2]).reshape(shape)

    lo = np.zeros(shape)
    hi = np.ones(shape)
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(70):
        m1 = hi - ratio * (hi - lo)
        m2 = lo + ratio * (hi - lo)
        left = dist(m1) < dist(m2)
        hi = np.where(left, m2, hi)
        lo = np.where(left, lo, m1)
    best = np.minimum(dist(0.5 * (lo + hi)), np.minimum(dist(lo * 0.0), dist(hi * 0.0 + 1.0)))
    return np.asarray(best.min(axis=1), dtype=np.float64)


def edges_of(geometry: shapely.Geometry) -> Floats:
    rings = shapely.get_rings(shapely.get_parts(geometry))
    if rings.size == 0:
        rings = shapely.get_parts(geometry)
    out = []
    for ring in rings:
        xy = shapely.get_coordinates(ring)
        out.append(np.column_stack([xy[:-1], xy[1:]]))
    return np.concatenate(out)


def star(lon: float, lat: float, outer: float, inner: float, points: int = 10) -> shapely.Polygon:
    n = 2 * points
    angles = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    radii = np.where(np.arange(n) % 2 == 0, outer, inner)
    xs, ys = offset(
        np.full(n, lon), np.full(n, lat), radii * np.sin(angles), radii * np.cos(angles)
    )
    return shapely.Polygon(np.column_stack([xs, ys]))


def scatter(lon: float, lat: float, half_m: float, n: int, seed: int) -> tuple[Floats, Floats]:
    rng = np.random.default_rng(seed)
    e = rng.uniform(-half_m, half_m, n)
    nn = rng.uniform(-half_m, half_m, n)
    return offset(np.full(n, lon), np.full(n, lat), e, nn)


# ---------------------------------------------------------------- shapes


def test_shapes_are_immutable_and_hashable() -> None:
    circle = Circle(71.43, 51.13, 500.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        circle.radius_m = 600.0  # type: ignore[misc]
    area = Area(shapely.box(71.0, 51.0, 71.1, 51.1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        area.geometry = shapely.box(0, 0, 1, 1)  # type: ignore[misc]
    margin_m(area, [71.05], [51.05])  # prepares the cached outline
    assert area == Area(shapely.box(71.0, 51.0, 71.1, 51.1))
    assert {circle, area, Corridor(shapely.LineString([(0, 0), (0, 1)]), 10.0)}


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: Circle(71.0, 51.0, 0.0), ValueError),
        (lambda: Circle(71.0, 51.0, -5.0), ValueError),
        (lambda: Circle(71.0, 91.0, 5.0), ValueError),
        (lambda: Circle(math.nan, 51.0, 5.0), ValueError),
        (lambda: Area(shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])), ValueError),
        (lambda: Area(shapely.Polygon()), ValueError),
        (lambda: Area(shapely.LineString([(0, 0), (1, 1)])), TypeError),
        (lambda: Corridor(shapely.LineString([(0, 0), (1, 1)]), 0.0), ValueError),
        (lambda: Corridor(shapely.box(0, 0, 1, 1), 5.0), TypeError),
    ],
)
def test_shapes_refuse_nonsense(make: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        make()  # type: ignore[operator]


# ---------------------------------------------------------------- circle margins


def test_circle_margin_is_distance_minus_radius() -> None:
    home = Circle(71.4304, 51.1282, 50.0)
    lon, lat = scatter(home.lon, home.lat, 200.0, 1000, seed=1)
    expected = (
        np.asarray(GEOD.inv(np.full(lon.size, home.lon), np.full(lon.size, home.lat), lon, lat)[2])
        - 50.0
    )
    np.testing.assert_allclose(margin_m(home, lon, lat), expected, atol=1e-4)


def test_margin_keeps_the_input_shape_and_marks_bad_positions_nan() -> None:
    home = Circle(71.4304, 51.1282, 50.0)
    grid = margin_m(home, np.full((2, 3), 71.4304), np.full((2, 3), 51.1282))
    assert grid.shape == (2, 3)
    np.testing.assert_allclose(grid, -50.0)
    assert margin_m(home, 71.4304, 51.1282).shape == ()
    area = Area(shapely.box(71.0, 51.0, 71.1, 51.1))
    for shape in (home, area, Corridor(shapely.LineString([(71.0, 51.0), (71.1, 51.1)]), 9.0)):
        out = margin_m(shape, [71.05, np.nan, np.inf, 71.05], [51.05, 51.05, 51.05, -np.inf])
        assert math.isfinite(out[0])
        assert np.all(np.isnan(out[1:]))


# ---------------------------------------------------------------- area margins


@pytest.mark.parametrize(
    ("lon", "lat"),
    [(71.43, 0.0), (-1.55, 43.0), (71.43, 51.13), (25.7, 66.0), (10.0, 85.0), (-60.0, -85.0)],
)
def test_area_margin_matches_the_geodesic_reference(lon: float, lat: float) -> None:
    # A 30 km star (nine metres of concave detail are not the point: 10 and 15 km arms).
    area = Area(star(lon, lat, 15_000.0, 9_000.0, points=6))
    px, py = scatter(lon, lat, 30_000.0, 400, seed=int(abs(lat)) + 7)
    margins = margin_m(area, px, py)
    ref = reference_distance(px, py, edges_of(area.geometry))
    inside = shapely.contains_xy(area.geometry, px, py)
    np.testing.assert_array_equal(margins <= 0.0, inside)
    near = ref < 15_000.0
    assert near.sum() > 100
    err = np.abs(np.abs(margins) - ref)
    assert err[near].max() < 0.005  # metres
    assert err.max() < 0.05


def test_margin_counts_holes_as_outside() -> None:
    outer = shapely.box(71.30, 51.05, 71.50, 51.20)
    hole = shapely.box(71.38, 51.10, 71.42, 51.14)
    area = Area(shapely.Polygon(outer.exterior.coords, [hole.exterior.coords]))
    # The middle of the hole: outside, as far from the hole's edge as its half width (a
    # degree of longitude is shorter than one of latitude here).
    m = float(margin_m(area, 71.40, 51.12))
    assert m > 0.0
    assert m == pytest.approx(float(distance_m(71.40, 51.12, 71.42, 51.12)), abs=0.01)
    # Between the hole and the outer edge: inside.
    assert float(margin_m(area, 71.34, 51.12)) < 0.0
    lon, lat = scatter(71.40, 51.12, 9000.0, 300, seed=3)
    ref = reference_distance(lon, lat, edges_of(area.geometry))
    np.testing.assert_allclose(np.abs(margin_m(area, lon, lat)), ref, atol=0.005)


def test_boundary_points_have_zero_margin() -> None:
    area = Area(shapely.box(71.0, 51.0, 71.1, 51.1))
    m = margin_m(area, [71.0, 71.05, 71.1], [51.0, 51.1, 51.05])
    np.testing.assert_allclose(m, 0.0, atol=1e-6)
    assert np.all(m <= 0.0 + 1e-6)


def test_area_split_at_the_antimeridian_has_no_seam() -> None:
    east_half = shapely.box(179.9, -17.1, 180.0, -17.0)
    west_half = shapely.box(-180.0, -17.1, -179.9, -17.0)
    area = Area(shapely.MultiPolygon([east_half, west_half]))
    # On the seam itself, in the middle: as deep as half the height of the box.
    depth = float(distance_m(180.0, -17.05, 180.0, -17.0))
    for lon in (180.0, -180.0, 179.99999, -179.99999):
        assert float(margin_m(area, lon, -17.05)) == pytest.approx(-depth, abs=0.01)
    # Just outside either far edge.
    assert float(margin_m(area, 179.899, -17.05)) > 0.0
    assert float(margin_m(area, -179.899, -17.05)) > 0.0
    west, _, east, _ = bounds(area)
    assert (west, east) == pytest.approx((179.9, -179.9))


def test_area_margin_on_many_points_is_vectorised() -> None:
    area = Area(star(71.43, 51.13, 4000.0, 2500.0))
    lon, lat = scatter(71.43, 51.13, 10_000.0, 200_000, seed=9)
    margins = margin_m(area, lon, lat)  # speed: bench/geofences_margin.py
    assert margins.shape == (200_000,)
    step = 997
    sample = slice(0, None, step)
    ref = reference_distance(lon[sample], lat[sample], edges_of(area.geometry))
    np.testing.assert_allclose(np.abs(margins[sample]), ref, atol=0.005)


@PROPERTY
@given(
    st.floats(-179.0, 179.0),
    st.floats(-80.0, 80.0),
    st.integers(3, 9),
    st.floats(200.0, 15_000.0),
    st.integers(0, 2**32 - 1),
)
def test_random_polygons_sign_and_distance(
    lon: float, lat: float, vertices: int, size: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    angles = np.sort(rng.uniform(0.0, 2.0 * np.pi, vertices))
    radii = rng.uniform(0.3 * size, size, vertices)
    xs, ys = offset(
        np.full(vertices, lon),
        np.full(vertices, lat),
        radii * np.sin(angles),
        radii * np.cos(angles),
    )
    polygon = shapely.Polygon(np.column_stack([xs, ys]))
    if not polygon.is_valid or polygon.area == 0.0:
        return
    area = Area(polygon)
    px, py = scatter(lon, lat, 2.0 * size, 30, seed=seed % 1000)
    margins = margin_m(area, px, py)
    np.testing.assert_array_equal(margins <= 0.0, shapely.covers(polygon, shapely.points(px, py)))
    ref = reference_distance(px, py, edges_of(polygon))
    np.testing.assert_allclose(np.abs(margins), ref, atol=0.005)


# ---------------------------------------------------------------- corridor margins


def test_corridor_holds_490_m_and_not_510_m_from_its_line() -> None:
    start = (71.40, 51.10)
    end = destination(*start, 60.0, 8000.0)
    road = Corridor(shapely.LineString([start, end]), 500.0)
    # The line is straight in lon/lat (RFC 7946), not a geodesic: take its own middle and
    # its own direction there.
    mid = (0.5 * (start[0] + end[0]), 0.5 * (start[1] + end[1]))
    ahead = (0.49 * start[0] + 0.51 * end[0], 0.49 * start[1] + 0.51 * end[1])
    heading = float(GEOD.inv(*mid, *ahead)[0])
    for side in (-90.0, 90.0):
        near = destination(*mid, heading + side, 490.0)
        far = destination(*mid, heading + side, 510.0)
        assert float(margin_m(road, *near)) == pytest.approx(-10.0, abs=0.05)
        assert float(margin_m(road, *far)) == pytest.approx(10.0, abs=0.05)
    # Round ends: 490 m beyond the end along the line is still inside.
    beyond = destination(*end, 60.0, 490.0)
    assert float(margin_m(road, *beyond)) == pytest.approx(-10.0, abs=0.05)


def test_corridor_margin_matches_the_reference() -> None:
    line = shapely.LineString([(71.40, 51.10), (71.45, 51.13), (71.52, 51.12), (71.60, 51.16)])
    road = Corridor(line, 250.0)
    lon, lat = scatter(71.50, 51.13, 12_000.0, 300, seed=4)
    ref = reference_distance(lon, lat, edges_of(line))
    np.testing.assert_allclose(margin_m(road, lon, lat), ref - 250.0, atol=0.005)


# ---------------------------------------------------------------- bounds


def test_bounds_hold_their_shapes() -> None:
    home = Circle(71.43, 51.13, 500.0)
    west, south, east, north = bounds(home)
    assert west < 71.43 < east
    assert south < 51.13 < north
    area = Area(shapely.box(71.0, 51.0, 71.1, 51.1))
    assert bounds(area) == (71.0, 51.0, 71.1, 51.1)
    road = Corridor(shapely.LineString([(71.0, 51.0), (71.1, 51.1)]), 1000.0)
    west, south, east, north = bounds(road)
    lons, lats = destination(71.0, 51.0, np.arange(0.0, 360.0, 15.0), 1000.0)
    assert np.all((west < lons) & (lons < east) & (south < lats) & (lats < north))


def test_corridor_bounds_across_the_antimeridian() -> None:
    road = Corridor(shapely.LineString([(179.99, 10.0), (180.0, 10.0)]), 5000.0)
    west, _, east, _ = bounds(road)
    assert west > east
    assert west < 179.99
    assert -180.0 < east < -179.9


# ---------------------------------------------------------------- crossings


def test_segment_crosses_a_circle_between_fixes() -> None:
    home = Circle(71.4304, 51.1282, 500.0)
    before = offset(home.lon, home.lat, -2000.0, 490.0)
    after = offset(home.lon, home.lat, 2000.0, 490.0)
    wide_before = offset(home.lon, home.lat, -2000.0, 510.0)
    wide_after = offset(home.lon, home.lat, 2000.0, 510.0)
    inside = offset(home.lon, home.lat, 10.0, 10.0)
    crosses = segment_crosses(
        home,
        [before[0], wide_before[0], inside[0], after[0]],
        [before[1], wide_before[1], inside[1], after[1]],
        [after[0], wide_after[0], inside[0], after[0]],
        [after[1], wide_after[1], inside[1], after[1]],
    )
    assert crosses.tolist() == [True, False, True, False]


def test_segment_crosses_a_circle_on_the_antimeridian() -> None:
    home = Circle(179.999, 51.0, 500.0)
    west = offset(home.lon, home.lat, -3000.0, 0.0)
    east = offset(home.lon, home.lat, 3000.0, 0.0)
    assert east[0] < 0.0
    assert segment_crosses(home, west[0], west[1], east[0], east[1]).tolist() is True


def test_segment_crosses_an_area() -> None:
    area = Area(shapely.box(71.40, 51.10, 71.45, 51.14))
    result = segment_crosses(
        area,
        [71.30, 71.30, 71.42, 71.30, 71.46, np.nan],
        [51.12, 51.00, 51.12, 51.09, 51.12, 51.12],
        [71.50, 71.50, 71.42, 71.46, 71.46, 71.50],
        [51.12, 51.00, 51.12, 51.15, 51.12, 51.12],
    )
    # through, wide of it, standing inside, clipping a corner, standing outside, unknown
    assert result.tolist() == [True, False, True, True, False, False]
    assert segment_crosses(area, [[71.3]], 51.12, 71.5, 51.12).shape == (1, 1)


def test_segment_crosses_a_corridor() -> None:
    road = Corridor(shapely.LineString([(71.40, 51.10), (71.40, 51.20)]), 500.0)
    west_far = offset(71.40, 51.15, -3000.0, 0.0)
    east_far = offset(71.40, 51.15, 3000.0, 0.0)
    par_out = [offset(71.40, 51.12, 600.0, 0.0), offset(71.40, 51.18, 600.0, 0.0)]
    par_in = [offset(71.40, 51.12, 400.0, 0.0), offset(71.40, 51.18, 400.0, 0.0)]
    # Passing the end cap: from 510 m west of the end's prolongation... to 510 m east.
    cap = offset(71.40, 51.20, 0.0, 490.0)
    cap_w = offset(cap[0], cap[1], -2000.0, 0.0)
    cap_e = offset(cap[0], cap[1], 2000.0, 0.0)
    starts = [west_far, par_out[0], par_in[0], cap_w]
    ends = [east_far, par_out[1], par_in[1], cap_e]
    result = segment_crosses(
        road,
        [s[0] for s in starts],
        [s[1] for s in starts],
        [e[0] for e in ends],
        [e[1] for e in ends],
    )
    assert result.tolist() == [True, False, True, True]


def test_segment_crosses_a_corridor_near_a_bend() -> None:
    # The fix segment passes 400 m from the bend of the line, ends far from both arms.
    road = Corridor(shapely.LineString([(71.30, 51.10), (71.40, 51.15), (71.50, 51.10)]), 450.0)
    apex = (71.40, 51.15)
    a = offset(apex[0], apex[1], -800.0, 400.0)
    b = offset(apex[0], apex[1], 800.0, 400.0)
    assert bool(segment_crosses(road, a[0], a[1], b[0], b[1])) is True
    c = offset(apex[0], apex[1], -800.0, 500.0)
    d = offset(apex[0], apex[1], 800.0, 500.0)
    assert bool(segment_crosses(road, c[0], c[1], d[0], d[1])) is False


def test_margins_of_many_pairs_are_each_pairs_margin() -> None:
    """margins_m measures (shape, point) pairs of many shapes at once, circles in one
    array pass: each element is what margin_m says for its own shape and point."""
    rng = np.random.default_rng(3)
    circles = [Circle(71.43 + 0.01 * k, 51.12 + 0.01 * k, 100.0 + 50 * k) for k in range(4)]
    square = Area(shapely.Polygon([(71.40, 51.10), (71.46, 51.10), (71.46, 51.15), (71.40, 51.15)]))
    shapes = [*circles, square] * 30
    rng.shuffle(shapes)  # type: ignore[arg-type]
    lon = rng.uniform(71.38, 71.50, len(shapes))
    lat = rng.uniform(51.08, 51.18, len(shapes))
    lon[7] = np.nan
    got = margins_m(shapes, lon, lat)
    for i, shape in enumerate(shapes):
        one = float(margin_m(shape, lon[i], lat[i]))
        if i == 7:
            assert np.isnan(got[i])
            assert np.isnan(one)
        else:
            assert got[i] == pytest.approx(one, abs=1e-6)
    with pytest.raises(ValueError, match="2 shapes for 3 points"):
        margins_m(shapes[:2], lon[:3], lat[:3])
