"""geofences.geodesy: metres on WGS 84, checked against Karney's geodesics (pyproj.Geod)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod

from geofences.geodesy import (
    EXACT_BEYOND_M,
    circle_bounds,
    destination,
    distance_m,
    metres_per_degree,
    offset,
    wrap_longitude,
)
from geofences.model import Circle, margin_m

GEOD = Geod(ellps="WGS84")
# No example database on disk: unit tests do no I/O.
PROPERTY = settings(database=None, deadline=None, max_examples=300)

longitudes = st.floats(-180.0, 180.0)
latitudes = st.floats(-85.0, 85.0)
bearings = st.floats(0.0, 360.0)


def reference(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    return float(GEOD.inv(lon1, lat1, lon2, lat2)[2])


HOMES = [
    pytest.param(71.4304, 0.0, id="equator"),
    pytest.param(-1.5536, 43.0, id="43N"),
    pytest.param(71.4304, 51.1282, id="51N-astana"),
    pytest.param(25.7, 66.0, id="66N"),
    pytest.param(179.999, 51.0, id="antimeridian"),
    pytest.param(-179.999, -43.0, id="antimeridian-south"),
]
DIRECTIONS = [
    pytest.param(1.0, 0.0, id="east"),
    pytest.param(-1.0, 0.0, id="west"),
    pytest.param(0.0, 1.0, id="north"),
    pytest.param(0.0, -1.0, id="south"),
]


@pytest.mark.parametrize(("home_lon", "home_lat"), HOMES)
@pytest.mark.parametrize(("east", "north"), DIRECTIONS)
def test_500_m_radius_holds_490_m_and_not_510_m(
    home_lon: float, home_lat: float, east: float, north: float
) -> None:
    home = Circle(home_lon, home_lat, 500.0)
    near = offset(home_lon, home_lat, 490.0 * east, 490.0 * north)
    far = offset(home_lon, home_lat, 510.0 * east, 510.0 * north)
    assert distance_m(home_lon, home_lat, *near) == pytest.approx(490.0, abs=0.01)
    assert distance_m(home_lon, home_lat, *far) == pytest.approx(510.0, abs=0.01)
    margins = margin_m(home, [near[0], far[0]], [near[1], far[1]])
    assert margins[0] == pytest.approx(-10.0, abs=0.01)
    assert margins[1] == pytest.approx(10.0, abs=0.01)
    assert margins[0] <= 0.0 < margins[1]


def test_antimeridian_neighbours_are_close() -> None:
    # 0.0002° of longitude at the equator, on either side of ±180.
    d = distance_m(179.9999, 0.0, -179.9999, 0.0)
    assert float(d) == pytest.approx(reference(179.9999, 0.0, -179.9999, 0.0), abs=1e-6)
    assert float(d) == pytest.approx(22.26, abs=0.01)
    # Longitudes written past ±180 are the same places.
    assert float(distance_m(180.0001, 10.0, -179.9999, 10.0)) == pytest.approx(0.0, abs=1e-6)


def test_offset_crosses_the_antimeridian() -> None:
    lon, lat = offset(179.999, 51.0, 490.0, 0.0)
    assert -180.0 <= lon < -179.99
    assert float(distance_m(179.999, 51.0, lon, lat)) == pytest.approx(490.0, abs=0.001)


@pytest.mark.parametrize("lat", [0.0, 43.0, 51.0, 66.0, 80.0, 85.0, -85.0, 89.9])
@pytest.mark.parametrize("bearing", [0.0, 45.0, 90.0, 135.0, 180.0, 270.0])
@pytest.mark.parametrize("metres", [0.01, 1.0, 490.0, 10_000.0, 49_000.0])
def test_matches_geod_on_a_grid(lat: float, bearing: float, metres: float) -> None:
    lon2, lat2 = destination(10.0, lat, bearing, metres)
    assert float(distance_m(10.0, lat, lon2, lat2)) == pytest.approx(metres, abs=0.002)


@PROPERTY
@given(longitudes, latitudes, bearings, st.floats(0.0, 10_000.0))
def test_within_1_cm_of_geod_up_to_10_km(lon: float, lat: float, az: float, d: float) -> None:
    lon2, lat2, _ = GEOD.fwd(lon, lat, az, d)
    exact = reference(lon, lat, lon2, lat2)
    assert abs(float(distance_m(lon, lat, lon2, lat2)) - exact) < 0.001  # 1 mm, not just 1 cm


@PROPERTY
@given(longitudes, latitudes, bearings, st.floats(10_000.0, 60_000.0))
def test_within_2_mm_of_geod_up_to_60_km(lon: float, lat: float, az: float, d: float) -> None:
    lon2, lat2, _ = GEOD.fwd(lon, lat, az, d)
    exact = reference(lon, lat, lon2, lat2)
    assert abs(float(distance_m(lon, lat, lon2, lat2)) - exact) < 0.002


@PROPERTY
@given(longitudes, st.floats(-90.0, 90.0), longitudes, st.floats(-90.0, 90.0))
def test_any_pair_matches_geod_and_is_symmetric(
    lon1: float, lat1: float, lon2: float, lat2: float
) -> None:
    d = float(distance_m(lon1, lat1, lon2, lat2))
    exact = reference(lon1, lat1, lon2, lat2)
    assert d == pytest.approx(exact, abs=0.002, rel=1e-9)
    assert float(distance_m(lon2, lat2, lon1, lat1)) == pytest.approx(d, abs=1e-6, rel=1e-12)


@PROPERTY
@given(longitudes, latitudes, bearings)
def test_grows_with_distance_across_the_exact_switch(lon: float, lat: float, az: float) -> None:
    steps = np.array([0.0, 1.0, 1e3, 4.9e4, EXACT_BEYOND_M - 0.01, EXACT_BEYOND_M + 0.01, 6e4])
    steps = np.concatenate([steps, [1e5, 1e6, 1e7, 1.9e7]])
    n = steps.size
    lons, lats, _ = GEOD.fwd(np.full(n, lon), np.full(n, lat), np.full(n, az), steps)
    d = distance_m(lon, lat, lons, lats)
    assert np.all(np.diff(d) > 0.0)
    np.testing.assert_allclose(d, steps, atol=0.002, rtol=1e-9)


def test_broadcasts_and_keeps_shapes() -> None:
    lons = np.array([[71.0, 71.1, 71.2], [71.3, 71.4, 71.5]])
    d = distance_m(71.0, 51.0, lons, 51.0)
    assert d.shape == (2, 3)
    assert d.dtype == np.float64
    assert d[0, 0] == 0.0
    assert distance_m(0.0, 0.0, 0.0, 1.0).shape == ()
    column = distance_m(np.array([[0.0], [1.0]]), 0.0, np.array([0.0, 1.0, 2.0]), 0.0)
    assert column.shape == (2, 3)
    assert column[1, 1] == 0.0


def test_large_arrays_are_sliced_without_changing_results() -> None:
    rng = np.random.default_rng(5)
    n = 50_000  # more than one slice
    lon = rng.uniform(-180.0, 180.0, n)
    lat = rng.uniform(-89.0, 89.0, n)
    lon2, lat2 = destination(lon, lat, rng.uniform(0.0, 360.0, n), rng.uniform(0.0, 8e4, n))
    whole = distance_m(lon, lat, lon2, lat2)
    parts = np.concatenate(
        [
            distance_m(lon[i : i + 999], lat[i : i + 999], lon2[i : i + 999], lat2[i : i + 999])
            for i in range(0, n, 999)
        ]
    )
    np.testing.assert_array_equal(whole, parts)
    assert distance_m(lon[0], lat[0], lon2, lat2).shape == (n,)


def test_nan_in_nan_out() -> None:
    d = distance_m([0.0, np.nan], [0.0, 0.0], [0.0, 1.0], [1.0, 1.0])
    assert math.isfinite(d[0])
    assert math.isnan(d[1])


def test_offset_and_destination() -> None:
    lon, lat = offset(71.43, 51.13, 300.0, 400.0)
    assert isinstance(lon, float)
    assert isinstance(lat, float)
    assert float(distance_m(71.43, 51.13, lon, lat)) == pytest.approx(500.0, abs=1e-3)
    az = GEOD.inv(71.43, 51.13, lon, lat)[0]
    assert az == pytest.approx(math.degrees(math.atan2(300.0, 400.0)), abs=1e-9)
    lons, lats = destination([0.0, 10.0], [0.0, 60.0], 90.0, [1000.0, 2000.0])
    assert isinstance(lons, np.ndarray)
    assert lons.shape == (2,)
    np.testing.assert_allclose(distance_m([0.0, 10.0], [0.0, 60.0], lons, lats), [1e3, 2e3])
    assert offset(5.0, 5.0, 0.0, 0.0) == pytest.approx((5.0, 5.0))


def test_metres_per_degree_at_the_equator() -> None:
    along_parallel, along_meridian = metres_per_degree(0.0)
    assert float(along_parallel) == pytest.approx(111_319.49, abs=0.01)
    assert float(along_meridian) == pytest.approx(110_574.28, abs=0.01)


def test_wrap_longitude() -> None:
    np.testing.assert_allclose(wrap_longitude([181.0, -181.0, 540.0, 0.0]), [-179, 179, -180, 0])
    assert float(wrap_longitude(-170.0, 175.0)) == 190.0


@PROPERTY
@given(
    longitudes,
    st.floats(-89.99, 89.99),
    st.floats(1.0, 100_000.0),
    st.lists(bearings, min_size=1, max_size=8),
)
def test_circle_bounds_hold_the_circle(
    lon: float, lat: float, radius: float, azs: list[float]
) -> None:
    west, south, east, north = circle_bounds(lon, lat, radius)
    n = len(azs)
    lons, lats, _ = GEOD.fwd(np.full(n, lon), np.full(n, lat), np.array(azs), np.full(n, radius))
    assert np.all((south <= lats) & (lats <= north))
    if west <= east:
        assert np.all((west <= lons) & (lons <= east))
    else:  # across the antimeridian, RFC 7946 style
        assert np.all((lons >= west) | (lons <= east))


def test_circle_bounds_over_a_pole_span_all_longitudes() -> None:
    west, south, east, north = circle_bounds(0.0, 89.999, 500.0)
    assert (west, east, north) == (-180.0, 180.0, 90.0)
    assert south < 89.999


def test_circle_bounds_cross_the_antimeridian() -> None:
    west, _, east, _ = circle_bounds(179.999, 51.0, 500.0)
    assert west > east
    assert 179.99 < west < 179.999
    assert -180.0 < east < -179.99
