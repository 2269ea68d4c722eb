"""Believable movement for simulated wearers: pure, seeded, in metres.

A track is a plan (a repeating list of legs in metres east and north of the home)
plus GNSS noise whose spread matches the accuracy each fix reports. Indoors (a leg
marked so: home, work, a shop) the receiver does worse, as real ones do: positions
come from Wi-Fi with an accuracy of tens of metres and an error that drifts slowly,
still spread as the reported accuracy promises. Nothing here reads the clock or does
I/O: the caller says how many seconds of the scenario have passed, so the same seed and
the same sample times give the same fixes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = [
    "INDOOR_ACC_M",
    "WGS84_A",
    "WGS84_E2",
    "Leg",
    "LonLat",
    "Noise",
    "Plan",
    "Sample",
    "Track",
    "breaker_plan",
    "commuter_plan",
    "compliant_plan",
    "destination",
    "distance_m",
    "meridian_radius_m",
    "prime_vertical_radius_m",
    "to_local",
]

# WGS 84: semi-major axis and first eccentricity squared.
WGS84_A = 6_378_137.0
_WGS84_F = 1 / 298.257223563
WGS84_E2 = _WGS84_F * (2 - _WGS84_F)

# Wi-Fi positions indoors: accuracy radius range in metres.
INDOOR_ACC_M = (20.0, 45.0)

# For a 2-D Gaussian error with the same spread on both axes, the radius holding 68 % of
# the fixes is sigma * sqrt(-2 ln(1 - 0.68)); the protocol's `acc` is that radius.
_ACC_PER_SIGMA = math.sqrt(-2.0 * math.log(1.0 - 0.68))


class LonLat(NamedTuple):
    """WGS 84 degrees, longitude first as in GeoJSON and the operator API."""

    lon: float
    lat: float


def meridian_radius_m(lat_deg: float) -> float:
    """Radius of curvature in the meridian: metres per radian of latitude."""
    s = math.sin(math.radians(lat_deg))
    return WGS84_A * (1 - WGS84_E2) / math.pow(1 - WGS84_E2 * s * s, 1.5)


def prime_vertical_radius_m(lat_deg: float) -> float:
    """Radius of curvature in the prime vertical; times cos(lat), metres per radian east."""
    s = math.sin(math.radians(lat_deg))
    return WGS84_A / math.sqrt(1 - WGS84_E2 * s * s)


def _metres_per_degree(lat_deg: float) -> tuple[float, float]:
    """(metres per degree of longitude, metres per degree of latitude) at a latitude."""
    east = prime_vertical_radius_m(lat_deg) * math.cos(math.radians(lat_deg))
    return math.radians(east), math.radians(meridian_radius_m(lat_deg))


def destination(origin: LonLat, east_m: float, north_m: float) -> LonLat:
    """The point `east_m`, `north_m` metres from `origin` on the local tangent plane.

    The radii are taken at the latitude halfway along, which keeps a few kilometres'
    offset within centimetres of the geodesic answer.
    """
    _, per_deg_lat = _metres_per_degree(origin.lat)
    lat = origin.lat + north_m / per_deg_lat
    per_deg_lon, per_deg_lat = _metres_per_degree((origin.lat + lat) / 2)
    lat = origin.lat + north_m / per_deg_lat
    return LonLat(origin.lon + east_m / per_deg_lon, lat)


def to_local(origin: LonLat, point: LonLat) -> tuple[float, float]:
    """(east, north) metres of `point` from `origin`: the inverse of `destination`."""
    per_deg_lon, per_deg_lat = _metres_per_degree((origin.lat + point.lat) / 2)
    return (point.lon - origin.lon) * per_deg_lon, (point.lat - origin.lat) * per_deg_lat


def distance_m(a: LonLat, b: LonLat) -> float:
    """Distance in metres between nearby points (good to centimetres within 10 km)."""
    mid = (a.lat + b.lat) / 2
    per_deg_lon, per_deg_lat = _metres_per_degree(mid)
    return math.hypot((b.lon - a.lon) * per_deg_lon, (b.lat - a.lat) * per_deg_lat)


@dataclass(frozen=True, slots=True)
class Leg:
    """Straight movement from `start` to `end` (metres east, north of home); a dwell
    when both are the same."""

    start: tuple[float, float]
    end: tuple[float, float]
    duration_s: float
    indoor: bool = False  # positions from Wi-Fi, worse and drifting
    charging: bool = False  # the battery is on its charger meanwhile

    def __post_init__(self) -> None:
        if not self.duration_s > 0:
            raise ValueError(f"a leg lasts a positive time, not {self.duration_s}")

    @property
    def speed_mps(self) -> float:
        dx, dy = self.end[0] - self.start[0], self.end[1] - self.start[1]
        return math.hypot(dx, dy) / self.duration_s


@dataclass(frozen=True, slots=True)
class Plan:
    """Legs followed one after the other, then again from the first (a daily routine)."""

    legs: tuple[Leg, ...]

    def __post_init__(self) -> None:
        if not self.legs:
            raise ValueError("a plan needs at least one leg")

    @property
    def cycle_s(self) -> float:
        return sum(leg.duration_s for leg in self.legs)

    def position(self, elapsed_s: float) -> tuple[float, float, float]:
        """(east, north, speed) in metres and m/s, `elapsed_s` into the plan."""
        leg, into = self._leg(elapsed_s)
        if into is None:
            # Only float rounding lands here: the end of the last leg.
            return leg.end[0], leg.end[1], 0.0
        f = into / leg.duration_s
        east = leg.start[0] + f * (leg.end[0] - leg.start[0])
        north = leg.start[1] + f * (leg.end[1] - leg.start[1])
        return east, north, leg.speed_mps

    def leg_at(self, elapsed_s: float) -> Leg:
        """The leg the wearer is on `elapsed_s` into the plan."""
        return self._leg(elapsed_s)[0]

    def _leg(self, elapsed_s: float) -> tuple[Leg, float | None]:
        remaining = max(0.0, elapsed_s) % self.cycle_s
        for leg in self.legs:
            if remaining < leg.duration_s:
                return leg, remaining
            remaining -= leg.duration_s
        return self.legs[-1], None

    def battery_pct(
        self,
        since_s: float,
        until_s: float,
        start_pct: float,
        idle_per_h: float = 1.5,
        moving_per_h: float = 4.0,
        charge_per_h: float = 30.0,
    ) -> int:
        """Battery at `until_s` into the plan for one at `start_pct` at `since_s`:
        draining slowly at rest, faster on the move (GNSS tracking, more fixes), charging
        on legs marked so; always within [3, 100]."""
        level = start_pct
        t = max(0.0, since_s)
        end = max(t, until_s)
        while t < end:
            leg, into = self._leg(t)
            left = leg.duration_s - into if into is not None else 0.0
            span = min(max(left, 1e-3), end - t)
            if leg.charging:
                rate = charge_per_h
            else:
                rate = -(moving_per_h if leg.speed_mps > 0.2 else idle_per_h)
            level = min(100.0, max(3.0, level + rate * span / 3600.0))
            t += span
        return round(level)


def _polar(distance: float, bearing_rad: float) -> tuple[float, float]:
    """(east, north) of a point `distance` metres away on a bearing from north."""
    return distance * math.sin(bearing_rad), distance * math.cos(bearing_rad)


def _walk(legs: list[Leg], to: tuple[float, float], speed_mps: float) -> None:
    start = legs[-1].end if legs else (0.0, 0.0)
    dist = math.hypot(to[0] - start[0], to[1] - start[1])
    legs.append(Leg(start, to, max(dist / speed_mps, 1.0)))


def _dwell(legs: list[Leg], duration_s: float) -> None:
    here = legs[-1].end if legs else (0.0, 0.0)
    legs.append(Leg(here, here, duration_s))


def compliant_plan(rng: np.random.Generator, shop_max_m: float = 300.0, trips: int = 6) -> Plan:
    """Days at home broken by walks to a shop or pharmacy within `shop_max_m`."""
    legs: list[Leg] = []
    for _ in range(trips):
        _dwell(legs, float(rng.uniform(120, 600)))
        shop = _polar(float(rng.uniform(60, shop_max_m - 20)), float(rng.uniform(0, 2 * math.pi)))
        speed = float(rng.uniform(1.1, 1.5))
        _walk(legs, shop, speed)
        _dwell(legs, float(rng.uniform(60, 300)))
        _walk(legs, (0.0, 0.0), speed)
        _dwell(legs, float(rng.uniform(600, 1800)))
    return Plan(tuple(legs))


def commuter_plan(rng: np.random.Generator) -> Plan:
    """A working day across town, repeated every 24 hours from midnight: asleep at home
    with the bracelet charging; a walk to the stop, a bus to work 2 to 6 km away, work
    indoors, lunch at a café near work, the bus back, a shop near home, an evening at
    home. Indoor legs report Wi-Fi positions."""
    work = _polar(float(rng.uniform(2000, 6000)), float(rng.uniform(0, 2 * math.pi)))
    stop = _polar(float(rng.uniform(150, 400)), float(rng.uniform(0, 2 * math.pi)))
    cafe = (
        work[0] + float(rng.uniform(-250, 250)),
        work[1] + float(rng.uniform(-250, 250)),
    )
    shop = _polar(float(rng.uniform(100, 600)), float(rng.uniform(0, 2 * math.pi)))
    walk = float(rng.uniform(1.1, 1.5))
    bus = float(rng.uniform(6.0, 9.0))
    legs: list[Leg] = []

    def go(to: tuple[float, float], speed: float) -> None:
        _walk(legs, to, speed)

    def stay(seconds: float, indoor: bool = True, charging: bool = False) -> None:
        here = legs[-1].end if legs else (0.0, 0.0)
        legs.append(Leg(here, here, seconds, indoor=indoor, charging=charging))

    stay(6.5 * 3600 + float(rng.uniform(0, 1800)), charging=True)  # night
    stay(float(rng.uniform(1200, 2400)))  # breakfast
    go(stop, walk)
    stay(float(rng.uniform(60, 600)), indoor=False)  # waiting for the bus
    go(work, bus)
    stay(float(rng.uniform(3.5, 4.5)) * 3600)
    go(cafe, walk)
    stay(float(rng.uniform(1800, 3000)))
    go(work, walk)
    stay(float(rng.uniform(3.5, 4.5)) * 3600)
    go(stop, bus)
    go(shop, walk)
    stay(float(rng.uniform(600, 1500)))
    go((0.0, 0.0), walk)
    used = sum(leg.duration_s for leg in legs)
    stay(max(600.0, 86_400.0 - used))  # the evening, until midnight
    return Plan(tuple(legs))


def breaker_plan(
    rng: np.random.Generator,
    away_m: float = 900.0,
    away_s: float = 420.0,
    ride_mps: float = 6.0,
    home_s: float = 1800.0,
) -> Plan:
    """Leaves home almost at once (by bicycle, so the 500 m line is crossed inside two
    minutes), wanders about `away_m` from home for `away_s`, rides back, stays home for
    `home_s`, and does it again."""
    bearing = float(rng.uniform(0, 2 * math.pi))
    legs: list[Leg] = []
    _dwell(legs, 20.0)
    _walk(legs, _polar(away_m, bearing), ride_mps)
    # Wander between spots near the far point, never closer than 80 % of `away_m`.
    spent = 0.0
    while spent < away_s:
        spot = _polar(
            away_m + float(rng.uniform(-0.1, 0.1)) * away_m,
            bearing + float(rng.uniform(-0.15, 0.15)),
        )
        _walk(legs, spot, 1.3)
        _dwell(legs, float(rng.uniform(30, 90)))
        spent += legs[-1].duration_s + legs[-2].duration_s
    _walk(legs, (0.0, 0.0), ride_mps)
    _dwell(legs, home_s)
    return Plan(tuple(legs))


class Noise:
    """GNSS error: Gaussian with the spread the reported accuracy promises, correlated
    in time (a Gauss-Markov process), since a real receiver's error drifts rather than
    jumping afresh on every fix."""

    def __init__(self, rng: np.random.Generator, correlation_s: float = 30.0) -> None:
        self._rng = rng
        self._correlation_s = correlation_s
        self._z = rng.standard_normal(2)
        self._last_s: float | None = None

    def offset(self, elapsed_s: float, acc_m: float) -> tuple[float, float]:
        """(east, north) error in metres for a fix reporting accuracy `acc_m`."""
        if self._last_s is not None:
            rho = math.exp(-max(0.0, elapsed_s - self._last_s) / self._correlation_s)
            # The innovation's weight keeps each step's marginal a standard normal.
            self._z = rho * self._z + math.sqrt(1 - rho * rho) * self._rng.standard_normal(2)
        self._last_s = elapsed_s
        sigma = acc_m / _ACC_PER_SIGMA
        return float(self._z[0] * sigma), float(self._z[1] * sigma)


@dataclass(frozen=True, slots=True)
class Sample:
    """One generated fix (without seq or time, which belong to the device)."""

    lat: float
    lon: float
    acc: float
    spd: float
    src: str
    true_distance_m: float  # of the wearer, not the fix, from home: for demo output


def _plan_rng(seed: int | Sequence[int]) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))


class Track:
    """A wearer around `home` following `plan`, sampled at non-decreasing times.

    `speedup` says how many metres-per-second of the plan each reported metre per second
    stands for: the fleet compresses the scenario in time and the reported speed follows
    the positions the backend actually sees.
    """

    def __init__(
        self,
        home: LonLat,
        plan: Plan,
        seed: int | Sequence[int],
        acc_range_m: tuple[float, float] = (5.0, 15.0),
        speedup: float = 1.0,
        phase_s: float = 0.0,
    ) -> None:
        self.home = home
        self.plan = plan
        # Where in the plan the track begins (a day plan: the time of day at the start).
        self.phase_s = phase_s
        # A stream of its own, so that the plan drawn from the same seed does not
        # mirror the noise.
        self._rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
        self._noise = Noise(self._rng)
        self._acc_range = acc_range_m
        self._speedup = speedup
        # Each receiver has its own typical accuracy (antenna, how it is worn).
        lo, hi = acc_range_m
        self._acc_typical = float(self._rng.uniform(lo + 1.0, (lo + hi) / 2))
        # Drawn only by plans with indoor legs, so that the others keep their fixes.
        self._indoor_noise = Noise(
            np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,))), 300.0
        )
        self._indoor_typical = float(np.mean(INDOOR_ACC_M))

    @classmethod
    def compliant(cls, home: LonLat, seed: int | Sequence[int], speedup: float = 1.0) -> Track:
        return cls(home, compliant_plan(_plan_rng(seed)), seed, speedup=speedup)

    @classmethod
    def breaker(cls, home: LonLat, seed: int | Sequence[int], speedup: float = 1.0) -> Track:
        return cls(home, breaker_plan(_plan_rng(seed)), seed, speedup=speedup)

    @classmethod
    def commuter(
        cls,
        home: LonLat,
        seed: int | Sequence[int],
        speedup: float = 1.0,
        time_of_day_s: float = 0.0,
    ) -> Track:
        """A commuter's day, begun at `time_of_day_s` after local midnight."""
        return cls(
            home, commuter_plan(_plan_rng(seed)), seed, speedup=speedup, phase_s=time_of_day_s
        )

    def battery(self, elapsed_s: float, start_pct: float) -> int:
        """The battery `elapsed_s` into the track, from `start_pct` at its start."""
        return self.plan.battery_pct(self.phase_s, self.phase_s + elapsed_s, start_pct)

    def sample(self, elapsed_s: float) -> Sample:
        """The fix the receiver reports `elapsed_s` seconds of scenario time in."""
        at = elapsed_s + self.phase_s
        east, north, speed = self.plan.position(at)
        indoor = self.plan.leg_at(at).indoor
        lo, hi = INDOOR_ACC_M if indoor else self._acc_range
        typical = self._indoor_typical if indoor else self._acc_typical
        acc = min(hi, max(lo, typical * math.exp(0.25 * self._rng.standard_normal())))
        # Indoors the error drifts slowly (the same access points for minutes on end).
        noise = self._indoor_noise if indoor else self._noise
        de, dn = noise.offset(elapsed_s, acc)
        point = destination(self.home, east + de, north + dn)
        # Receivers report a little speed even at rest.
        spd = abs(speed * self._speedup + 0.15 * float(self._rng.standard_normal()))
        return Sample(
            lat=round(point.lat, 7),
            lon=round(point.lon, 7),
            acc=round(acc, 1),
            spd=round(spd, 2),
            src="wifi" if indoor else "gnss",
            true_distance_m=math.hypot(east, north),
        )
