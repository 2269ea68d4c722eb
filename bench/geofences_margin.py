"""Micro-benchmark: margin_m checks per second on 1,000,000 fixes.

Against a 500 m home Circle and against a 20-vertex Area about 8 km across, both in Astana,
with the fixes scattered over a 20 km square around them. Prints figures only; the time
taken is not asserted anywhere. CPU steal on shared machines moves these numbers a lot:
compare runs made back to back.

    python bench/geofences_margin.py [points]
"""

from __future__ import annotations

import sys
import time

import numpy as np
import shapely

from geofences.geodesy import offset
from geofences.model import Area, Circle, Shape, margin_m

HOME_LON, HOME_LAT = 71.4304, 51.1282
REPEATS = 3


def _area(vertices: int = 20) -> Area:
    angles = np.linspace(0.0, 2.0 * np.pi, vertices, endpoint=False)
    radii = np.where(np.arange(vertices) % 2 == 0, 4_000.0, 2_500.0)  # a star, not convex
    lon, lat = offset(
        np.full(vertices, HOME_LON),
        np.full(vertices, HOME_LAT),
        radii * np.sin(angles),
        radii * np.cos(angles),
    )
    return Area(shapely.Polygon(np.column_stack([lon, lat])))


def _best_rate(shape: Shape, lon: np.ndarray, lat: np.ndarray) -> tuple[float, float]:
    margin_m(shape, lon[:1000], lat[:1000])  # prepares the shape, warms the caches
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        margins = margin_m(shape, lon, lat)
        best = min(best, time.perf_counter() - start)
    return lon.size / best, float(np.mean(margins <= 0.0))


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    rng = np.random.default_rng(7)
    lon, lat = offset(
        np.full(count, HOME_LON),
        np.full(count, HOME_LAT),
        rng.uniform(-10_000.0, 10_000.0, count),
        rng.uniform(-10_000.0, 10_000.0, count),
    )
    shapes: list[tuple[str, Shape]] = [
        ("Circle (500 m home)", Circle(HOME_LON, HOME_LAT, 500.0)),
        ("Area (20 vertices)", _area()),
    ]
    print(f"margin_m on {count:,} points, best of {REPEATS}")
    for name, shape in shapes:
        rate, inside = _best_rate(shape, lon, lat)
        print(f"  {name:<22} {rate / 1e6:8.2f} M checks/s   ({inside:.1%} inside)")


if __name__ == "__main__":
    main()
