"""monitor.rules.batch: many subjects judged at once decide exactly as engine.evaluate
does subject by subject (changes and states), and the flat-metric polygon screen keeps
within its error bound."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences.geodesy import offset
from geofences.model import Area, Circle, Corridor, Shape, margin_m
from monitor.domain import Fix, Status
from monitor.rules.batch import (
    BatchState,
    FixColumns,
    RuleTable,
    _edges,
    _polygon_margins,
    judge_batch,
    with_subject_state,
)
from monitor.rules.book import RuleBook, SharedZones, StatusOrder, ZoneEntry
from monitor.rules.engine import Debounce, SubjectState, evaluate
from monitor.rules.margins import Margins, Measured
from monitor.rules.schedule import parse
from monitor.rules.transitions import transitions

PROPERTY = settings(database=None, deadline=None, max_examples=40)
T0 = datetime(2026, 11, 22, 15, 50, tzinfo=UTC)  # 20:50 in Almaty: a curfew starts soon
SINCE = T0 - timedelta(days=1)
CENTRE = (71.4304, 51.1282)
TAG = frozenset({"negative_test_required"})
CURFEW = parse({"weekly": [{"from": "21:00", "to": "07:00"}]})
SOURCES = ["gnss", "gnss", "gnss", "wifi", "beacon", "cell"]


def at(east: float, north: float) -> tuple[float, float]:
    lon, lat = offset(CENTRE[0], CENTRE[1], east, north)
    return float(lon), float(lat)


def star(east: float, north: float, outer: float, inner: float, points: int = 5) -> Area:
    angles = np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    ring = [
        at(east + r * math.sin(a), north + r * math.cos(a))
        for r, a in zip(radii, angles, strict=True)
    ]
    return Area(shapely.Polygon(ring))


def shared_zones(rng: np.random.Generator) -> SharedZones:
    entries = []
    for i in range(40):
        e, n = rng.uniform(-3000, 3000, 2)
        shape: Shape = (
            Circle(*at(e, n), float(rng.uniform(50, 400)))
            if i % 2
            else star(e, n, float(rng.uniform(200, 600)), 100.0)
        )
        entries.append(ZoneEntry(f"shared-{i}", "exclusion", shape, SINCE, tags=TAG))
    return SharedZones(entries)


def subject_book(i: int, rng: np.random.Generator, shared: SharedZones) -> RuleBook:
    home = at(*rng.uniform(-1500, 1500, 2))
    options: list[ZoneEntry] = [
        ZoneEntry(
            f"home-{i}",
            "home",
            Circle(*home, float(rng.uniform(50, 400))),
            SINCE,
            schedule=CURFEW if rng.random() < 0.5 else None,
        ),
        ZoneEntry(f"district-{i}", "inclusion", star(*rng.uniform(-500, 500, 2), 2500, 900), SINCE),
        ZoneEntry(f"bar-{i}", "exclusion", Circle(*at(*rng.uniform(-2000, 2000, 2)), 200.0), SINCE),
        ZoneEntry(f"park-{i}", "exclusion", star(*rng.uniform(-2000, 2000, 2), 500, 150), SINCE),
        ZoneEntry(
            f"route-{i}",
            "inclusion",
            Corridor(shapely.LineString([at(-3000, -100), at(0, 300), at(3000, 0)]), 600.0),
            SINCE,
        ),
        # A zone that only comes into force during the batches.
        ZoneEntry(
            f"late-{i}",
            "exclusion",
            Circle(*at(*rng.uniform(-1000, 1000, 2)), 300.0),
            T0 + timedelta(seconds=90),
        ),
    ]
    chosen = [z for z in options if rng.random() < 0.6]
    statuses = []
    kind = rng.integers(0, 4)
    if kind == 0:
        statuses.append(StatusOrder(Status.BLUE, SINCE, SINCE))
    elif kind == 1:
        statuses.append(StatusOrder(Status.YELLOW, SINCE, SINCE, home=home))
    elif kind == 2:
        statuses.append(StatusOrder(Status.BLUE, SINCE, SINCE))
        statuses.append(StatusOrder(Status.RED, T0 + timedelta(seconds=60), T0, home=home))
    return RuleBook(f"s{i}", "Asia/Almaty", tuple(chosen), tuple(statuses), shared)


def universe(seed: int) -> tuple[list[RuleBook], list[str], dict[str, str]]:
    rng = np.random.default_rng(seed)
    shared = shared_zones(rng)
    books = [subject_book(i, rng, shared) for i in range(5)]
    devices, owner = [], {}
    for i in range(5):
        for d in range(1 + i % 2):
            devices.append(f"D{i}-{d}")
            owner[f"D{i}-{d}"] = f"s{i}"
    return books, devices, owner


def batches(seed: int, devices: list[str], count: int) -> list[list[Fix]]:
    rng = np.random.default_rng(seed)
    out = []
    t = 0.0
    seqs = dict.fromkeys(devices, 0)
    for _ in range(count):
        fixes = []
        for _ in range(int(rng.integers(1, 12))):
            device = devices[int(rng.integers(len(devices)))]
            jump = rng.random() < 0.2
            lon, lat = at(*rng.uniform(-3000, 3000, 2)) if jump else at(*rng.normal(0, 900, 2))
            late = rng.random() < 0.15
            s = t - float(rng.uniform(0, 120)) if late else t + float(rng.uniform(0, 40))
            seqs[device] += 1
            when = T0 + timedelta(seconds=s)
            acc = float(rng.choice([0.0, 3.0, 10.0, 40.0, 250.0]))
            src = str(rng.choice(SOURCES))
            fixes.append(Fix(device, seqs[device], when, lat, lon, acc, src, when))
        t += 45.0
        out.append(fixes)
    return out


@PROPERTY
@given(st.integers(0, 2**31), st.integers(0, 2**31))
def test_the_batch_path_decides_as_evaluate(universe_seed: int, fixes_seed: int) -> None:
    books, devices, owner = universe(universe_seed)
    debounce = Debounce(confirm_fixes=2, confirm_s=60)
    table = RuleTable(books, devices)
    state = BatchState.initial(table)
    states = {b.subject_id: SubjectState() for b in books}
    by_id = {b.subject_id: b for b in books}
    for fixes in batches(fixes_seed, devices, 5):
        subjects = [owner[f.device_id] for f in fixes]
        cols = FixColumns.from_fixes(table, fixes, subjects)
        state, changes, stats = judge_batch(table, state, cols, debounce)
        assert stats.fixes == len(fixes)
        expected = []
        for s in table.subjects:
            mine = [f for f, o in zip(fixes, subjects, strict=True) if o == s]
            if mine:
                states[s], found = evaluate(by_id[s], states[s], mine, debounce)
                expected += found
        assert changes == expected
        for k, s in enumerate(table.subjects):
            mine_devices = [table.device_index[d] for d, o in owner.items() if o == s]
            got = state.subject_state(table, k, mine_devices)
            assert got.last_t == states[s].last_t
            assert dict(got.episodes) == dict(states[s].episodes)
            assert dict(got.last_fixes) == dict(states[s].last_fixes)


def test_columns_without_fix_objects_decide_alike() -> None:
    books, devices, owner = universe(7)
    table = RuleTable(books, devices)
    with_objects = without = BatchState.initial(table)
    for fixes in batches(8, devices, 4):
        subjects = [owner[f.device_id] for f in fixes]
        cols = FixColumns.from_fixes(table, fixes, subjects)
        bare = FixColumns(
            cols.subject,
            cols.device,
            cols.t_us,
            cols.lon,
            cols.lat,
            cols.acc,
            cols.src,
            cols.seq,
            cols.received_us,
        )
        with_objects, a, _ = judge_batch(table, with_objects, cols)
        without, b, _ = judge_batch(table, without, bare)
        assert [(c.change, c.episode.key) for c in a] == [(c.change, c.episode.key) for c in b]
        np.testing.assert_array_equal(with_objects.last_us, without.last_us)


def test_an_empty_batch_and_the_table_figures() -> None:
    books, devices, _ = universe(3)
    table = RuleTable(books, devices)
    state = BatchState.initial(table)
    empty = FixColumns.from_fixes(table, [], [])
    assert judge_batch(table, state, empty)[1:] == ([], judge_batch(table, state, empty)[2])
    assert table.rows == int(table.subject_start[-1])
    assert table.nbytes() > 0
    assert state.nbytes() > 0


@PROPERTY
@given(
    st.floats(-80.0, 80.0),
    st.floats(-179.0, 179.0),
    st.floats(50.0, 20_000.0),
    st.integers(0, 2**31),
)
def test_the_polygon_screen_is_within_its_error_bound(
    lat: float, lon: float, size: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
    angles = np.arange(9) * 2 * np.pi / 9 + rng.uniform(0, 0.5, 9)
    radii = size * rng.uniform(0.4, 1.0, 9)
    x, y = offset(np.full(9, lon), np.full(9, lat), radii * np.sin(angles), radii * np.cos(angles))
    area = Area(shapely.Polygon(np.column_stack([x, y])))
    px, py = offset(
        np.full(200, lon),
        np.full(200, lat),
        rng.uniform(-3, 3, 200) * size,
        rng.uniform(-3, 3, 200) * size,
    )
    edges = _edges([area])
    approx, error = _polygon_margins(edges, np.zeros(200, dtype=np.intp), px, py)
    exact = margin_m(area, px, py)
    assert np.all(np.abs(approx - exact) <= error)
    # The sign (inside or not) is exact away from the boundary.
    clear = np.abs(exact) > error
    assert np.array_equal(approx[clear] < 0, exact[clear] < 0)


def test_the_shared_set_must_be_shared() -> None:
    """Books whose shared zones are not the same object are judged by evaluate itself."""
    books, devices, owner = universe(11)
    rng = np.random.default_rng(1)
    other = shared_zones(rng)
    books[1] = RuleBook(
        books[1].subject_id, "Asia/Almaty", books[1].zones, books[1].statuses, other
    )
    table = RuleTable(books, devices)
    assert table.own_shared.tolist() == [False, True, False, False, False]
    state = BatchState.initial(table)
    for fixes in batches(12, devices, 3):
        subjects = [owner[f.device_id] for f in fixes]
        state, _, _ = judge_batch(table, state, FixColumns.from_fixes(table, fixes, subjects))


@pytest.mark.parametrize("lon", [179.99, -179.99])
def test_zones_across_the_antimeridian_are_measured_exactly(lon: float) -> None:
    east = shapely.box(179.9, 51.0, 180.0, 51.1)
    west = shapely.box(-180.0, 51.0, -179.9, 51.1)
    zone = ZoneEntry("fiji", "exclusion", Area(shapely.MultiPolygon([east, west])), SINCE)
    book = RuleBook("s0", "UTC", zones=(zone,))
    table = RuleTable([book], ["D0"])
    fixes = [Fix("D0", i, T0 + timedelta(seconds=i), 51.05, lon, 5.0, "gnss", T0) for i in range(3)]
    _, changes, _ = judge_batch(
        table, BatchState.initial(table), FixColumns.from_fixes(table, fixes, ["s0"] * 3)
    )
    _, expected = evaluate(book, SubjectState(), fixes)
    assert changes == expected
    assert len(changes) == 1


def compliant_population(
    seed: int, count: int
) -> tuple[list[RuleBook], list[tuple[float, float, float]]]:
    """Subjects at home under curfew, a district around them and exclusion zones away from
    home, as in bench/rules.py; returns the books and each home (lon, lat, radius)."""
    rng = np.random.default_rng(seed)
    shared = shared_zones(rng)
    books, homes = [], []
    for i in range(count):
        e, n = rng.uniform(-20_000, 20_000, 2)
        radius = float(rng.uniform(50, 400))
        home = at(e, n)
        bearing = rng.uniform(0, 2 * np.pi)
        zones = (
            ZoneEntry(f"home-{i}", "home", Circle(*home, radius), SINCE, schedule=CURFEW),
            ZoneEntry(f"district-{i}", "inclusion", star(e, n, 3000, 1200, 8), SINCE),
            ZoneEntry(
                f"bar-{i}",
                "exclusion",
                Circle(*at(e + 900 * math.sin(bearing), n + 900 * math.cos(bearing)), 200.0),
                SINCE,
            ),
            ZoneEntry(
                f"park-{i}", "exclusion", star(e - 1500 * math.sin(bearing), n, 400, 150), SINCE
            ),
        )
        statuses = (StatusOrder(Status.BLUE, SINCE, SINCE),) if i % 4 == 0 else ()
        books.append(RuleBook(f"s{i}", "Asia/Almaty", zones, statuses, shared))
        homes.append((home[0], home[1], radius))
    return books, homes


@settings(database=None, deadline=None, max_examples=5)
@given(st.integers(0, 2**31))
def test_a_mostly_compliant_population_including_fixes_on_the_thresholds(seed: int) -> None:
    books, homes = compliant_population(seed, 100)
    devices = [f"D{i}" for i in range(len(books))]
    table = RuleTable(books, devices)
    rng = np.random.default_rng(seed + 1)
    state = BatchState.initial(table)
    states = [SubjectState() for _ in books]
    for k in range(4):
        t = T0 + timedelta(minutes=15 + k)  # 21:05 onwards: the curfew is in force
        fixes = []
        for i, (lon, lat, radius) in enumerate(homes):
            acc = float(rng.choice([3.0, 10.0, 30.0]))
            mode = rng.integers(0, 6)
            bearing = float(rng.uniform(0, 2 * np.pi))
            if mode == 0:  # exactly where the accuracy circle touches the home boundary
                d = radius + float(rng.choice([-acc, acc])) + float(rng.choice([-1e-6, 0.0, 1e-6]))
            elif mode == 1:  # out of home
                d = radius + 300.0
            elif mode == 2:  # near the district boundary or the bar
                d = float(rng.uniform(900.0, 3000.0))
            else:
                d = float(rng.uniform(0, radius * 0.5))
            f_lon, f_lat = offset(lon, lat, d * math.sin(bearing), d * math.cos(bearing))
            fixes.append(Fix(f"D{i}", k, t, float(f_lat), float(f_lon), acc, "gnss", t))
        cols = FixColumns.from_fixes(table, fixes, [b.subject_id for b in books])
        state, changes, _ = judge_batch(table, state, cols)
        expected = []
        for i, book in enumerate(books):
            states[i], found = evaluate(book, states[i], [fixes[i]])
            expected += found
        assert changes == expected
        for i in range(len(books)):
            got = state.subject_state(table, i, [i])
            assert (got.last_t, dict(got.episodes)) == (states[i].last_t, dict(states[i].episodes))


def test_a_warmed_subject_state_goes_in_and_comes_back_out() -> None:
    books, devices, owner = universe(5)
    table = RuleTable(books, devices)
    history = batches(6, devices, 3)
    s = 0
    mine = [f for batch in history for f in batch if owner[f.device_id] == table.subjects[s]]
    warmed, _ = evaluate(books[s], SubjectState(), mine, Debounce(2, 60))
    state = with_subject_state(BatchState.initial(table), table, s, warmed)
    own_devices = [table.device_index[d] for d, o in owner.items() if o == table.subjects[s]]
    back = state.subject_state(table, s, own_devices)
    assert (back.last_t, dict(back.episodes), dict(back.last_fixes)) == (
        warmed.last_t,
        dict(warmed.episodes),
        dict(warmed.last_fixes),
    )
    cleared = with_subject_state(state, table, s, SubjectState())
    assert s not in cleared.episodes


@PROPERTY
@given(st.integers(0, 2**31), st.integers(0, 2**31))
def test_geometry_measured_for_the_whole_batch_changes_nothing(
    universe_seed: int, fixes_seed: int
) -> None:
    """The service measures a batch's margins and segment lengths for all its subjects
    at once (Margins) and evaluate and transitions look them up: changes, states and
    transitions must be those of measuring subject by subject."""
    books, devices, owner = universe(universe_seed)
    debounce = Debounce(confirm_fixes=2, confirm_s=60)
    by_id = {b.subject_id: b for b in books}
    plain = {b.subject_id: SubjectState() for b in books}
    memo = {b.subject_id: SubjectState() for b in books}
    inside_plain: dict[str, dict[str, bool]] = {b.subject_id: {} for b in books}
    inside_memo: dict[str, dict[str, bool]] = {b.subject_id: {} for b in books}
    hits = 0
    for fixes in batches(fixes_seed, devices, 5):
        mine = {s: [f for f in fixes if owner[f.device_id] == s] for s in by_id}
        mine = {s: fs for s, fs in mine.items() if fs}
        margins = Margins.measure(
            Measured(by_id[s], fs, memo[s].last_fixes) for s, fs in mine.items()
        )
        for s, fs in mine.items():
            plain[s], expected = evaluate(by_id[s], plain[s], fs, debounce)
            memo[s], found = evaluate(by_id[s], memo[s], fs, debounce, margins)
            assert found == expected
            assert memo[s] == plain[s]
            inside_plain[s], moved = transitions(by_id[s], inside_plain[s], fs)
            inside_memo[s], moved_memo = transitions(by_id[s], inside_memo[s], fs, margins)
            assert moved_memo == moved
            assert inside_memo[s] == inside_plain[s]
            for rule in by_id[s].own_rules_at(fs[0].t):
                hits += margins.margins(rule.shape, fs[:1]) is not None
    assert hits > 0  # the memo was used, not bypassed


def test_margins_for_fixes_never_measured_are_not_guessed() -> None:
    book = universe(7)[0][0]
    f = Fix("D0-0", 1, T0, *reversed(at(10.0, 20.0)), 5.0, "gnss", T0)
    other = Fix("D0-0", 2, T0 + timedelta(seconds=10), *reversed(at(30.0, 20.0)), 5.0, "gnss", T0)
    margins = Margins.measure([Measured(book, [f], {})])
    for rule in book.own_rules_at(T0):
        got = margins.margins(rule.shape, [f])
        assert got is not None
        assert got[0] == pytest.approx(float(margin_m(rule.shape, f.lon, f.lat)), abs=1e-6)
        assert margins.margins(rule.shape, [f, other]) is None
    assert margins.lengths([f], [other]) is None
