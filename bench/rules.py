"""Benchmark: the rule engine's batch path at the scale of issue 3.

Builds 100,000 subjects with 5 zones each (a home circle with a curfew schedule, in
force at the time of the fixes; an allowed district polygon; two exclusion circles; an exclusion
polygon), a fifth of them under a blue status, plus 10,000 shared zones (circles and
polygons tagged negative_test_required) held once by every book. Then judges batches of
one fix per subject with `monitor.rules.batch.judge_batch` and prints subject-zone
decisions per second and the memory of the whole rule state (RSS growth of the process,
which counts shapely's own allocations too; tracemalloc only sees Python's and numpy's).
CPU steal (from /proc/stat) is printed beside the timings: on these virtual machines it
swings widely, so compare runs with low steal only. Nothing is asserted.

    python bench/rules.py [subjects] [shared zones] [batches]
"""

from __future__ import annotations

import gc
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import shapely

from geofences.model import Area, Circle
from monitor.domain import Status
from monitor.rules.batch import SOURCES, BatchState, FixColumns, RuleTable, judge_batch
from monitor.rules.book import RuleBook, SharedZones, StatusOrder, ZoneEntry
from monitor.rules.engine import SubjectState, evaluate
from monitor.rules.schedule import epoch_us, parse

T0 = datetime(2026, 11, 23, 16, 30, tzinfo=UTC)  # 21:30 in Almaty: curfews in force
SINCE = T0 - timedelta(days=30)
TAG = frozenset({"negative_test_required"})
M_PER_DEG_LAT = 111_320.0


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_times() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return fields[7], sum(fields[:8])


def steal_since(before: tuple[int, int]) -> float:
    steal, total = cpu_times()
    return (steal - before[0]) / max(total - before[1], 1)


def offsets(lon: np.ndarray, lat: np.ndarray, east: np.ndarray, north: np.ndarray):  # type: ignore[no-untyped-def]
    """Small offsets in metres (a local plane is plenty for building test data)."""
    return (
        lon + east / (M_PER_DEG_LAT * np.cos(np.radians(lat))),
        lat + north / M_PER_DEG_LAT,
    )


def polygons(
    lon: np.ndarray, lat: np.ndarray, radius: np.ndarray, vertices: int, rng
) -> list[Area]:  # type: ignore[no-untyped-def]
    """Star-shaped (not convex) polygons around each centre."""
    n = lon.size
    # Evenly spaced bearings, jittered: every gap under half a turn keeps the ring simple.
    step = 2 * np.pi / vertices
    angles = np.arange(vertices) * step + rng.uniform(0, 0.8 * step, (n, vertices))
    r = radius[:, None] * rng.uniform(0.6, 1.0, (n, vertices))
    x, y = offsets(lon[:, None], lat[:, None], r * np.sin(angles), r * np.cos(angles))
    ring = np.stack([x, y], axis=2)
    ring = np.concatenate([ring, ring[:, :1]], axis=1)
    geoms = shapely.polygons(ring)
    return [Area(g) for g in geoms]


def build(subjects: int, shared_count: int, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    # Cities of Kazakhstan-sized spread; subjects around them.
    cities_lon = rng.uniform(51.0, 86.0, 40)
    cities_lat = rng.uniform(41.0, 54.0, 40)
    city = rng.integers(0, 40, subjects)
    home_lon, home_lat = offsets(
        cities_lon[city],
        cities_lat[city],
        rng.uniform(-8000, 8000, subjects),
        rng.uniform(-8000, 8000, subjects),
    )
    # Shared zones: airports (polygons) and venues (circles), everywhere.
    s_lon = rng.uniform(50.0, 87.0, shared_count)
    s_lat = rng.uniform(40.0, 55.0, shared_count)
    half = shared_count // 2
    shared_polys = polygons(s_lon[:half], s_lat[:half], rng.uniform(500, 3000, half), 12, rng)
    entries = [
        ZoneEntry(f"airport-{i}", "exclusion", shape, SINCE, tags=TAG)
        for i, shape in enumerate(shared_polys)
    ]
    entries += [
        ZoneEntry(
            f"venue-{i}",
            "exclusion",
            Circle(float(s_lon[i]), float(s_lat[i]), float(rng.uniform(50, 1500))),
            SINCE,
            tags=TAG,
        )
        for i in range(half, shared_count)
    ]
    shared = SharedZones(entries)

    district = polygons(home_lon, home_lat, rng.uniform(4000, 8000, subjects), 16, rng)

    def away(low: float, high: float):  # type: ignore[no-untyped-def]
        """Points low..high metres from each home: exclusion zones never hold the home."""
        bearing = rng.uniform(0, 2 * np.pi, subjects)
        dist = rng.uniform(low, high, subjects)
        return offsets(home_lon, home_lat, dist * np.sin(bearing), dist * np.cos(bearing))

    p_lon, p_lat = away(1500, 3000)
    park = polygons(p_lon, p_lat, rng.uniform(100, 400, subjects), 8, rng)
    v_lon, v_lat = away(800, 2500)
    k_lon, k_lat = away(800, 3000)
    curfew = parse({"weekly": [{"from": "21:00", "to": "07:00"}]})
    home_radius = rng.uniform(50, 500, subjects)
    books = []
    for i in range(subjects):
        zones = (
            ZoneEntry(
                f"home-{i}",
                "home",
                Circle(float(home_lon[i]), float(home_lat[i]), float(home_radius[i])),
                SINCE,
                schedule=curfew,
            ),
            ZoneEntry(f"district-{i}", "inclusion", district[i], SINCE),
            ZoneEntry(
                f"victim-{i}", "exclusion", Circle(float(v_lon[i]), float(v_lat[i]), 200.0), SINCE
            ),
            ZoneEntry(
                f"school-{i}", "exclusion", Circle(float(k_lon[i]), float(k_lat[i]), 100.0), SINCE
            ),
            ZoneEntry(f"park-{i}", "exclusion", park[i], SINCE),
        )
        statuses = (StatusOrder(Status.BLUE, SINCE, SINCE),) if i % 5 == 0 else ()
        books.append(RuleBook(f"s{i}", "Asia/Almaty", zones, statuses, shared))
    return books, home_lon, home_lat, home_radius


def batch(
    table: RuleTable,
    home_lon: np.ndarray,
    home_lat: np.ndarray,
    radius: np.ndarray,
    t: datetime,
    rng: np.random.Generator,
) -> FixColumns:
    """One fix per subject: 98 % at home (the curfew is in force), jittering within a
    quarter of the home radius; the same 2 % away from home, about 1.5 km out."""
    n = home_lon.size
    away = (np.arange(n) * 7919) % 50 == 1  # the same subjects every batch
    spread = np.where(away, 30.0, radius * 0.25)
    east = rng.normal(0, 1, n) * spread + np.where(away, 1500.0, 0.0)
    north = rng.normal(0, 1, n) * spread
    lon, lat = offsets(home_lon, home_lat, east, north)
    src = np.where(rng.random(n) < 0.05, SOURCES.index("wifi"), SOURCES.index("gnss"))
    t_us = np.full(n, epoch_us(t), dtype=np.int64) + rng.integers(0, 1_000_000, n)
    return FixColumns(
        subject=np.arange(n, dtype=np.intp),
        device=np.arange(n, dtype=np.intp),
        t_us=t_us,
        lon=lon,
        lat=lat,
        acc=rng.uniform(3.0, 30.0, n),
        src=src.astype(np.int8),
        seq=np.full(n, -1, dtype=np.int64),
        received_us=t_us + 2_000_000,
    )


def main() -> None:
    subjects = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    shared_count = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    batches = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    rng = np.random.default_rng(3)
    gc.collect()
    rss0 = rss_bytes()
    start = time.perf_counter()
    books, home_lon, home_lat, radius = build(subjects, shared_count, rng)
    built = time.perf_counter() - start
    rss_books = rss_bytes()
    start = time.perf_counter()
    table = RuleTable(books, [f"BR-{i}" for i in range(subjects)])
    state = BatchState.initial(table)
    compiled = time.perf_counter() - start
    print(
        f"{subjects:,} subjects x 5 zones ({table.rows:,} rule rows, {len(table.areas):,} polygons)"
    )
    print(f"+ {shared_count:,} shared zones; {subjects // 5:,} subjects under blue status")
    print(f"built books in {built:.1f} s, compiled the table in {compiled:.1f} s")

    # Warm-up: the first fix of every device (no segment yet), builds the shared index.
    t = T0
    state, changes, stats = judge_batch(
        table, state, batch(table, home_lon, home_lat, radius, t, rng)
    )
    print(f"warm-up batch: {stats.eventful_subjects:,} eventful subjects, {len(changes)} changes")

    print(
        f"{'batch':>5} {'fixes':>8} {'own pairs':>10} {'seconds':>8} {'own dec/s':>11} "
        f"{'+shared':>11} {'eventful':>9} {'changes':>8} {'steal':>6}"
    )
    for k in range(batches):
        t += timedelta(seconds=30)
        cols = batch(table, home_lon, home_lat, radius, t, rng)
        gc.collect()
        cpu = cpu_times()
        start = time.perf_counter()
        state, changes, stats = judge_batch(table, state, cols)
        took = time.perf_counter() - start
        steal = steal_since(cpu)
        every = stats.pairs + stats.shared_pairs
        print(
            f"{k + 1:>5} {stats.fixes:>8,} {stats.pairs:>10,} {took:>8.2f} "
            f"{stats.pairs / took / 1e6:>9.2f} M {every / took / 1e6:>9.2f} M "
            f"{stats.eventful_subjects:>9,} {len(changes):>8,} {steal:>6.1%}"
        )
    print(
        "  own dec/s: (fix, own zone) pairs decided per second; +shared also counts the\n"
        f"  {stats.shared_pairs:,} (fix, shared zone) pairs of blue subjects, decided through"
        f" the index, of which {stats.shared_measured:,} were measured (nominal figure)"
    )
    gc.collect()
    rss_all = rss_bytes()
    print(
        f"memory: books and shapes {(rss_books - rss0) / 2**20:,.0f} MiB, whole rule state"
        f" (books, shared index, table, batch state) {(rss_all - rss0) / 2**20:,.0f} MiB RSS"
        f" (table arrays {table.nbytes() / 2**20:,.0f} MiB, batch state"
        f" {state.nbytes() / 2**20:,.1f} MiB)"
    )

    # The per-subject engine on a sample, for comparison.
    sample = min(2000, subjects)
    cols = batch(table, home_lon, home_lat, radius, t + timedelta(seconds=30), rng)
    fixes = [cols.fix(table, i) for i in range(sample)]
    for i in range(sample):  # prepares each polygon's edges, as a running service has
        evaluate(books[i], SubjectState(), [fixes[i]])
    cpu = cpu_times()
    start = time.perf_counter()
    pairs = 0
    for i in range(sample):
        _, _ = evaluate(books[i], SubjectState(), [fixes[i]])
        pairs += len(books[i].own_rules_at(fixes[i].t))
    took = time.perf_counter() - start
    print(
        f"per-subject engine.evaluate on {sample:,} subjects: {pairs / took / 1e3:,.0f} k"
        f" own decisions/s (steal {steal_since(cpu):.1%})"
    )


if __name__ == "__main__":
    main()
