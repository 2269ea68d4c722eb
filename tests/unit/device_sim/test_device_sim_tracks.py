"""Movement in metres on the WGS 84 ellipsoid, seeded tracks and the scenarios."""

from __future__ import annotations

import itertools
import math

import pytest
from pyproj import Geod

from device_sim.tracks import (
    WGS84_A,
    WGS84_E2,
    Leg,
    LonLat,
    Plan,
    Track,
    destination,
    distance_m,
    meridian_radius_m,
    prime_vertical_radius_m,
    to_local,
)

ALMATY = LonLat(76.889709, 43.238949)
ASTANA = LonLat(71.430411, 51.128207)
GEOD = Geod(ellps="WGS84")  # an independent geodesic reference (Karney's algorithm)


def test_radii_of_curvature_at_the_equator_and_the_pole() -> None:
    assert prime_vertical_radius_m(0) == pytest.approx(WGS84_A)
    assert meridian_radius_m(0) == pytest.approx(WGS84_A * (1 - WGS84_E2))
    polar = WGS84_A / math.sqrt(1 - WGS84_E2)
    assert prime_vertical_radius_m(90) == pytest.approx(polar)
    assert meridian_radius_m(90) == pytest.approx(polar)


@pytest.mark.parametrize(
    ("lat", "metres_per_degree_lon"),
    [(43.0, 81_541.0), (51.0, 70_197.7)],
)
def test_a_degree_of_longitude_is_shorter_further_north(
    lat: float, metres_per_degree_lon: float
) -> None:
    one_km_east = destination(LonLat(70.0, lat), 1000.0, 0.0)
    assert 1000.0 / (one_km_east.lon - 70.0) == pytest.approx(metres_per_degree_lon, abs=0.5)


@pytest.mark.parametrize("origin", [ALMATY, ASTANA], ids=["43N", "51N"])
@pytest.mark.parametrize("metres", [10.0, 500.0, 900.0, 5000.0])
@pytest.mark.parametrize("bearing_deg", [0, 37, 90, 180, 253, 315])
def test_offsets_and_distances_agree_with_the_geodesic(
    origin: LonLat, metres: float, bearing_deg: float
) -> None:
    east = metres * math.sin(math.radians(bearing_deg))
    north = metres * math.cos(math.radians(bearing_deg))
    point = destination(origin, east, north)
    _, _, geodesic = GEOD.inv(origin.lon, origin.lat, point.lon, point.lat)
    assert geodesic == pytest.approx(metres, abs=0.005)
    assert distance_m(origin, point) == pytest.approx(geodesic, abs=0.005)
    back_east, back_north = to_local(origin, point)
    assert back_east == pytest.approx(east, abs=0.005)
    assert back_north == pytest.approx(north, abs=0.005)


def test_the_same_seed_gives_the_same_fixes_and_another_seed_others() -> None:
    times = [i * 5.0 for i in range(200)]
    a = [Track.compliant(ALMATY, seed=7).sample(t) for t in times]
    b = [Track.compliant(ALMATY, seed=7).sample(t) for t in times]
    c = [Track.compliant(ALMATY, seed=8).sample(t) for t in times]
    assert a == b
    assert a != c


def test_fixes_look_like_a_gnss_receiver() -> None:
    track = Track.compliant(ASTANA, seed=3)
    for i in range(500):
        s = track.sample(i * 15.0)
        assert 5.0 <= s.acc <= 15.0
        assert s.src == "gnss"
        assert s.spd >= 0
        assert s.lat == round(s.lat, 7)
        assert s.lon == round(s.lon, 7)


def test_noise_spreads_as_the_reported_accuracy_promises() -> None:
    # acc is the 68 % radius: about 68 % of fixes fall within it of the true point.
    # Fixes 10 minutes apart, so the drifting error is nearly independent between them.
    track = Track(ALMATY, Plan((Leg((0.0, 0.0), (0.0, 0.0), 60.0),)), seed=11)
    within = 0
    n = 4000
    for i in range(n):
        s = track.sample(i * 600.0)
        within += distance_m(ALMATY, LonLat(s.lon, s.lat)) <= s.acc
    assert within / n == pytest.approx(0.68, abs=0.025)


def test_noise_drifts_rather_than_jumping_between_close_fixes() -> None:
    track = Track(ALMATY, Plan((Leg((0.0, 0.0), (0.0, 0.0), 60.0),)), seed=5)
    fixes = [track.sample(i * 1.0) for i in range(300)]
    steps = [
        distance_m(LonLat(a.lon, a.lat), LonLat(b.lon, b.lat)) for a, b in itertools.pairwise(fixes)
    ]
    spread = [distance_m(ALMATY, LonLat(f.lon, f.lat)) for f in fixes]
    assert sum(steps) / len(steps) < 0.5 * sum(spread) / len(spread)


@pytest.mark.parametrize("home", [ALMATY, ASTANA], ids=["43N", "51N"])
@pytest.mark.parametrize("seed", [1, 2, 3, 42])
def test_the_breaker_leaves_500m_within_two_minutes_and_stays_out(home: LonLat, seed: int) -> None:
    track = Track.breaker(home, seed=seed)
    times = [i * 5.0 for i in range(int(1200 / 5))]
    fixes = [(t, track.sample(t)) for t in times]
    # Out by the reported position and its whole accuracy circle, as a cautious
    # backend would judge it.
    out = [t for t, s in fixes if distance_m(home, LonLat(s.lon, s.lat)) - s.acc > 500.0]
    assert out, "never left"
    assert out[0] <= 120.0
    # One continuous stretch outside: at least 5 minutes and far more than 6 fixes.
    first, last = out[0], out[-1]
    assert last - first >= 300.0
    assert len(out) == (last - first) / 5.0 + 1
    assert max(distance_m(home, LonLat(s.lon, s.lat)) for _, s in fixes) < 1100.0
    # And home again afterwards.
    assert distance_m(home, LonLat(fixes[-1][1].lon, fixes[-1][1].lat)) < 60.0


@pytest.mark.parametrize("seed", range(8))
def test_compliant_wearers_stay_well_inside_500m(seed: int) -> None:
    home = ASTANA if seed % 2 else ALMATY
    track = Track.compliant(home, seed=seed)
    fixes = [track.sample(i * 15.0) for i in range(int(6 * 3600 / 15))]
    distances = [distance_m(home, LonLat(s.lon, s.lat)) for s in fixes]
    assert max(distances) < 400.0
    assert max(s.true_distance_m for s in fixes) <= 300.0
    assert max(s.true_distance_m for s in fixes) > 60.0, "never went to the shop"


def test_speedup_scales_the_reported_speed() -> None:
    plan = Plan((Leg((0.0, 0.0), (1400.0, 0.0), 1000.0),))  # 1.4 m/s
    slow = Track(ALMATY, plan, seed=1).sample(100.0)
    fast = Track(ALMATY, plan, seed=1, speedup=10.0).sample(100.0)
    assert slow.spd == pytest.approx(1.4, abs=0.6)
    assert fast.spd == pytest.approx(14.0, abs=0.6)


def test_a_plan_repeats_and_refuses_empty_legs() -> None:
    plan = Plan((Leg((0.0, 0.0), (100.0, 0.0), 100.0), Leg((100.0, 0.0), (0.0, 0.0), 100.0)))
    assert plan.cycle_s == 200.0
    assert plan.position(50.0)[:2] == pytest.approx((50.0, 0.0))
    assert plan.position(250.0)[:2] == pytest.approx((50.0, 0.0))
    assert plan.position(150.0) == pytest.approx((50.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        Leg((0.0, 0.0), (1.0, 1.0), 0.0)
    with pytest.raises(ValueError, match="at least one"):
        Plan(())


def test_a_commuter_crosses_town_to_work_and_back_each_day() -> None:
    track = Track.commuter(ALMATY, seed=4)
    day = [track.sample(t) for t in range(0, 86_400, 60)]
    far = max(s.true_distance_m for s in day)
    assert 1500.0 <= far <= 6800.0, "work is across town"
    assert day[0].true_distance_m == 0.0, "asleep at home at midnight"
    assert day[-1].true_distance_m == 0.0, "home again by the evening"
    # The next day repeats the plan.
    assert track.plan.position(3600.0) == track.plan.position(3600.0 + track.plan.cycle_s)
    assert abs(track.plan.cycle_s - 86_400.0) < 1.0


def test_indoors_the_fixes_come_from_wifi_and_drift_within_their_accuracy() -> None:
    home_all_day = Plan((Leg((0.0, 0.0), (0.0, 0.0), 86_400.0, indoor=True),))
    track = Track(ASTANA, home_all_day, seed=9)
    fixes = [track.sample(i * 900.0) for i in range(3000)]
    assert {s.src for s in fixes} == {"wifi"}
    assert all(20.0 <= s.acc <= 45.0 for s in fixes)
    within = sum(distance_m(ASTANA, LonLat(s.lon, s.lat)) <= s.acc for s in fixes)
    assert within / len(fixes) == pytest.approx(0.68, abs=0.04)
    # Slow drift: a minute apart, two Wi-Fi positions are close to each other.
    a, b = track.sample(100_000.0), track.sample(100_060.0)
    assert distance_m(LonLat(a.lon, a.lat), LonLat(b.lon, b.lat)) < 20.0


def test_the_start_of_day_follows_the_time_of_day() -> None:
    mid_morning = Track.commuter(ALMATY, seed=4, time_of_day_s=10.5 * 3600)
    assert mid_morning.sample(0.0).true_distance_m > 1500.0, "at work"
    assert mid_morning.sample(0.0).src == "wifi"
    assert Track.commuter(ALMATY, seed=4, time_of_day_s=3 * 3600).sample(0.0).true_distance_m == 0


def test_the_battery_drains_on_the_move_and_charges_at_night() -> None:
    track = Track.commuter(ALMATY, seed=4, time_of_day_s=7 * 3600)
    levels = [track.battery(h * 3600.0, 80) for h in range(25)]
    assert all(3 <= v <= 100 for v in levels)
    assert levels[12] < levels[0], "a day's wear drains it"
    assert max(levels[17:]) > levels[16], "it charges at night"
    assert levels == [track.battery(h * 3600.0, 80) for h in range(25)]
