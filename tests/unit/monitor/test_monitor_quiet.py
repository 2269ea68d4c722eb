"""The engine's quiet path: with the batch's geometry measured (Margins), a subject whose
fixes cannot change anything only moves its state forward, without the full plan. It
must decide exactly as judging in full does, on the populations where it is taken most
(subjects at home) and on the thresholds where it must not be: a fix whose accuracy
circle touches a boundary, a segment just long enough to cross one, home beacons, late
fixes, open episodes, rules coming into force and orders changing mid-batch."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences.geodesy import offset
from geofences.model import Circle
from monitor.domain import Fix, Status
from monitor.rules import engine
from monitor.rules.book import RuleBook, StatusOrder, ZoneEntry
from monitor.rules.engine import Debounce, SubjectState, evaluate
from monitor.rules.margins import Margins, Measured
from monitor.rules.schedule import parse
from monitor.rules.transitions import transitions

T0 = datetime(2026, 11, 22, 15, 50, tzinfo=UTC)  # 20:50 in Almaty: a curfew starts soon
SINCE = T0 - timedelta(days=1)
CENTRE = (71.4304, 51.1282)
CURFEW = parse({"weekly": [{"from": "21:00", "to": "07:00"}]})
DEBOUNCE = Debounce(confirm_fixes=2, confirm_s=60)


def at(east: float, north: float) -> tuple[float, float]:
    lon, lat = offset(CENTRE[0], CENTRE[1], east, north)
    return float(lon), float(lat)


def population(rng: np.random.Generator, count: int) -> list[tuple[RuleBook, float, float]]:
    """Books with a home radius (a yellow order, as every subject of the benchmark has)
    or a home zone under curfew, an exclusion zone 300-600 m from home for some, a zone
    coming into force during the batches and an order changing mid-batch for others.
    Returns each book with its home's east/north offset."""
    out = []
    for i in range(count):
        e, n = (float(v) for v in rng.uniform(-5000, 5000, 2))
        home = at(e, n)
        radius = float(rng.choice([50.0, 150.0, 500.0]))
        zones: list[ZoneEntry] = []
        statuses: list[StatusOrder] = []
        if i % 3:
            statuses.append(
                StatusOrder(
                    Status.YELLOW, SINCE, SINCE, home=home, radius_m=radius, zone_id=f"h{i}"
                )
            )
        else:
            zones.append(
                ZoneEntry(f"home-{i}", "home", Circle(*home, radius), SINCE, schedule=CURFEW)
            )
        if i % 4 == 1:
            d = float(rng.uniform(300, 600))
            zones.append(ZoneEntry(f"bar-{i}", "exclusion", Circle(*at(e + d, n), 150.0), SINCE))
        if i % 5 == 2:
            zones.append(
                ZoneEntry(
                    f"late-{i}",
                    "exclusion",
                    Circle(*at(e, n - 400), 200.0),
                    T0 + timedelta(seconds=150),
                )
            )
        if i % 7 == 3:
            statuses.append(StatusOrder(Status.GREEN, T0 + timedelta(seconds=200), T0))
        out.append((RuleBook(f"s{i}", "Asia/Almaty", tuple(zones), tuple(statuses)), e, n))
    return out


def uploads(
    rng: np.random.Generator, people: list[tuple[RuleBook, float, float]], rounds: int
) -> Iterator[dict[str, list[Fix]]]:
    """Each round, an upload of a few fixes per subject from one or two devices: mostly
    well inside the home radius, some exactly where the accuracy circle touches the
    boundary, some jumps out and back, some beacon fixes, some late."""
    seqs: dict[str, int] = {}
    for k in range(rounds):
        batch: dict[str, list[Fix]] = {}
        for i, (book, e, n) in enumerate(people):
            order = book.statuses[0] if book.statuses else None
            radius = (
                order.radius_m
                if order is not None and order.radius_m
                else book.zones[0].shape.radius_m
            )  # type: ignore[attr-defined]
            fixes = []
            for j in range(int(rng.integers(1, 6))):
                device = f"D{i}-{j % (1 + i % 2)}"
                seqs[device] = seqs.get(device, 0) + 1
                acc = float(rng.choice([0.0, 3.0, 10.0, 30.0]))
                mode = int(rng.integers(0, 10))
                bearing = float(rng.uniform(0, 2 * math.pi))
                if mode == 0:  # the accuracy circle just touches the home boundary
                    d = radius - acc + float(rng.choice([-1e-6, 0.0, 1e-6]))
                elif mode == 1:  # out, far enough to violate
                    d = radius + acc + float(rng.uniform(1, 400))
                elif mode == 2:  # just inside, by less than a step
                    d = radius * float(rng.uniform(0.8, 0.99))
                else:
                    d = radius * float(rng.uniform(0, 0.3))
                lon, lat = at(e + d * math.sin(bearing), n + d * math.cos(bearing))
                late = k > 0 and rng.random() < 0.08
                s = 100.0 * k + 10.0 * j - (float(rng.uniform(20, 150)) if late else 0.0)
                when = T0 + timedelta(seconds=s)
                src = "beacon" if rng.random() < 0.1 else "gnss"
                fixes.append(Fix(device, seqs[device], when, lat, lon, acc, src, when))
            batch[book.subject_id] = fixes
        yield batch


@settings(database=None, deadline=None, max_examples=8)
@given(st.integers(0, 2**31))
def test_the_quiet_path_decides_as_judging_in_full(seed: int) -> None:
    taken = {"quiet": 0, "full": 0}
    real = engine._quiet

    def counted(
        book: RuleBook, state: SubjectState, ordered: list[Fix], margins: Margins
    ) -> SubjectState | None:
        found = real(book, state, ordered, margins)
        taken["quiet" if found is not None else "full"] += 1
        return found

    engine._quiet = counted  # type: ignore[assignment]
    try:
        judge_alike(seed)
    finally:
        engine._quiet = real  # type: ignore[assignment]
    # Both ways were taken often (360 judgments; this population is made of thresholds).
    assert taken["quiet"] >= 50
    assert taken["full"] >= 50


def judge_alike(seed: int) -> None:
    rng = np.random.default_rng(seed)
    people = population(rng, 60)
    books = {b.subject_id: b for b, _, _ in people}
    full = {s: SubjectState() for s in books}
    quick = {s: SubjectState() for s in books}
    inside_full: dict[str, dict[str, bool]] = {s: {} for s in books}
    inside_quick: dict[str, dict[str, bool]] = {s: {} for s in books}
    for batch in uploads(rng, people, 6):
        margins = Margins.measure(
            Measured(books[s], fixes, quick[s].last_fixes) for s, fixes in batch.items()
        )
        for s, fixes in batch.items():
            full[s], expected = evaluate(books[s], full[s], fixes, DEBOUNCE)
            quick[s], found = evaluate(books[s], quick[s], fixes, DEBOUNCE, margins)
            assert found == expected
            assert quick[s] == full[s]
            inside_full[s], moved = transitions(books[s], inside_full[s], fixes)
            inside_quick[s], moved_quick = transitions(books[s], inside_quick[s], fixes, margins)
            assert moved_quick == moved
            assert inside_quick[s] == inside_full[s]


def test_a_segment_long_enough_to_cross_is_judged_in_full() -> None:
    """Two fixes well inside a small home radius on either side of it, both compliant:
    the straight path between them leaves the zone, so the quiet path must step aside
    and the crossing is found."""
    home = at(0, 0)
    book = RuleBook(
        "s",
        "Asia/Almaty",
        (),
        (StatusOrder(Status.YELLOW, SINCE, SINCE, home=home, radius_m=500.0, zone_id="h"),),
    )
    # A C-shaped path is not possible with one circle; an exclusion zone between two
    # compliant fixes is the case that matters.
    bar = ZoneEntry("bar", "exclusion", Circle(*at(0, 0), 100.0), SINCE)
    book = RuleBook("s", "Asia/Almaty", (bar,), book.statuses)
    a = Fix("D", 1, T0, *reversed(at(-300, 0)), 5.0, "gnss", T0)
    b = Fix("D", 2, T0 + timedelta(seconds=10), *reversed(at(300, 0)), 5.0, "gnss", T0)
    state, _ = evaluate(book, SubjectState(), [a], DEBOUNCE)
    margins = Margins.measure([Measured(book, [b], state.last_fixes)])
    assert engine._quiet(book, state, [b], margins) is None
    _, changes = evaluate(book, state, [b], DEBOUNCE, margins)
    assert [c.change.value for c in changes] == ["open", "clear"]
    assert changes[0].crossing


def test_the_quiet_path_needs_the_geometry_of_every_fix() -> None:
    book = RuleBook(
        "s",
        "Asia/Almaty",
        (),
        (StatusOrder(Status.YELLOW, SINCE, SINCE, home=at(0, 0), radius_m=500.0, zone_id="h"),),
    )
    a = Fix("D", 1, T0, *reversed(at(10, 0)), 5.0, "gnss", T0)
    b = Fix("D", 2, T0 + timedelta(seconds=10), *reversed(at(20, 0)), 5.0, "gnss", T0)
    measured = Margins.measure([Measured(book, [a], {})])
    assert engine._quiet(book, SubjectState(), [a], measured) == SubjectState(T0, {}, {"D": a})
    # b was never measured: no guess.
    assert engine._quiet(book, SubjectState(), [a, b], measured) is None
