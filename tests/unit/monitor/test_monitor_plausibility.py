"""monitor.rules.plausibility: impossible speeds and future fix times, flagged, never
dropped; a spoofing alert opened per device and cleared by plausible fixes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences.geodesy import distance_m, offset
from monitor.domain import AlertKind, Fix, Severity
from monitor.rules.plausibility import (
    DeviceCheck,
    Limits,
    Problem,
    future_fixes,
    impossible_speeds,
    judge,
)

PROPERTY = settings(database=None, deadline=None, max_examples=60)
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
ASTANA = (71.4304, 51.1282)


def fix(
    east: float,
    s: float,
    seq: int,
    *,
    acc: float = 5.0,
    src: str = "gnss",
    device: str = "BR-1",
    received_after_s: float = 2.0,
) -> Fix:
    lon, lat = offset(ASTANA[0], ASTANA[1], east, 0.0)
    t = T0 + timedelta(seconds=s)
    return Fix(
        device, seq, t, float(lat), float(lon), acc, src, t + timedelta(seconds=received_after_s)
    )


def test_a_car_is_plausible_a_jump_is_not() -> None:
    car = [fix(30.0 * i * 10, 10 * i, i) for i in range(5)]  # 30 m/s
    assert impossible_speeds(car) == []
    jump = [fix(0, 0, 1), fix(10_000, 10, 2)]  # 1 km/s
    (flag,) = impossible_speeds(jump)
    assert flag.problem is Problem.SPEED
    assert (flag.previous, flag.fix) == (jump[0], jump[1])
    assert flag.speed_m_s == pytest.approx((10_000 - 10) / 10, rel=1e-3)
    assert flag.kind is AlertKind.SPOOFING
    assert flag.detail["problem"] == "impossible_speed"


def test_accuracies_are_granted() -> None:
    # 1000 m in 10 s looks like 100 m/s, but both fixes could be 200 m off: 60 m/s.
    pair = [fix(0, 0, 1, acc=200.0), fix(1000, 10, 2, acc=200.0)]
    assert impossible_speeds(pair) == []
    assert len(impossible_speeds(pair, Limits(max_speed_m_s=50.0))) == 1


def test_two_fixes_at_one_instant() -> None:
    same = [fix(0, 0, 1), fix(0.5, 0, 2)]
    assert impossible_speeds(same) == []
    apart = [fix(0, 0, 1), fix(500, 0, 2)]
    (flag,) = impossible_speeds(apart)
    assert flag.speed_m_s == float("inf")
    assert flag.detail["speed_m_s"] is None
    assert "same time" in flag.reason


def test_beacon_and_cell_fixes_are_left_out_of_the_chain() -> None:
    fixes = [fix(0, 0, 1), fix(50_000, 5, 2, src="cell", acc=3000.0), fix(100, 10, 3)]
    assert impossible_speeds(fixes) == []
    # Counted, the cell fix is a jump there and back: flagged into it and out of it.
    assert len(impossible_speeds(fixes, Limits(ignore_sources=frozenset()))) == 2


def test_devices_are_chained_apart_and_in_fix_time_order() -> None:
    a = [fix(0, 0, 1, device="A"), fix(100, 10, 2, device="A")]
    b = [fix(20_000, 0, 1, device="B"), fix(20_100, 10, 2, device="B")]
    assert impossible_speeds([a[1], b[0], a[0], b[1]]) == []


def test_the_chain_continues_from_the_previous_batch() -> None:
    before = fix(0, 0, 1)
    (flag,) = impossible_speeds([fix(10_000, 10, 2)], previous={"BR-1": before})
    assert flag.previous == before


def test_future_fix_times() -> None:
    ok = fix(0, 0, 1, received_after_s=-60.0)  # a minute ahead: within the tolerance
    ahead = fix(0, 10, 2, received_after_s=-600.0)
    (flag,) = future_fixes([ok, ahead])
    assert flag.problem is Problem.FUTURE
    assert flag.ahead_s == pytest.approx(600.0)
    assert flag.detail == {"problem": "future_fix", "reason": flag.reason, "ahead_s": 600.0}


@PROPERTY
@given(
    st.lists(
        st.tuples(st.floats(-1e5, 1e5), st.floats(0.0, 100.0), st.floats(1.0, 500.0)), max_size=8
    )
)
def test_a_flag_exactly_when_the_least_speed_is_too_high(
    steps: list[tuple[float, float, float]],
) -> None:
    fixes, t = [], 0.0
    for i, (east, gap, acc) in enumerate(steps):
        t += gap
        fixes.append(fix(east, t, i + 1, acc=acc))
    flagged = {f.fix.seq for f in impossible_speeds(fixes)}
    ordered = sorted(fixes, key=lambda f: (f.t, f.seq or 0))
    for a, b in pairwise(ordered):
        d = float(distance_m(a.lon, a.lat, b.lon, b.lat)) - a.acc - b.acc
        dt = (b.t - a.t).total_seconds()
        too_fast = d > 0 and (dt == 0 or d / dt > 70.0)
        assert (b.seq in flagged) is too_fast


# --- judge: open and clear per device ------------------------------------------------------


def test_a_flag_opens_and_plausible_fixes_clear() -> None:
    limits = Limits(clear_after=3)
    checks, outcomes = judge({}, [fix(0, 0, 1), fix(10_000, 10, 2)], limits)
    assert [(o.clears, o.fix.seq) for o in outcomes] == [(False, 2)]
    assert outcomes[0].severity is Severity.SERIOUS
    assert checks["BR-1"] == DeviceCheck(last=outcomes[0].fix, flagged=True, plausible=0)
    more = [fix(10_000 + 10 * i, 10 + 10 * i, 3 + i) for i in range(1, 4)]
    checks, outcomes = judge(checks, more, limits)
    assert [(o.clears, o.fix.seq) for o in outcomes] == [(True, more[-1].seq)]
    assert checks["BR-1"].flagged is False
    # Nothing more to clear.
    checks, outcomes = judge(checks, [fix(10_100, 100, 10)], limits)
    assert outcomes == []


def test_a_late_fix_is_checked_but_moves_nothing() -> None:
    checks, _ = judge({}, [fix(0, 100, 5)])
    late_ok = fix(10, 50, 4)
    late_wild = fix(0, 60, 3, received_after_s=-1000.0)
    new, outcomes = judge(checks, [late_ok, late_wild])
    assert [(o.flag.problem if o.flag else None) for o in outcomes] == [Problem.FUTURE]
    assert new["BR-1"].last == checks["BR-1"].last


@PROPERTY
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["BR-1", "BR-2", "BR-3"]),
            st.floats(-3000, 3000),
            st.integers(0, 600),
            st.sampled_from(["gnss", "gnss", "cell", "beacon"]),
            st.floats(-5, 90),
        ),
        min_size=1,
        max_size=30,
    ),
    st.integers(0, 29),
)
def test_a_batch_of_many_devices_is_judged_as_each_device_alone(
    rows: list[tuple[str, float, int, str, float]], cut: int
) -> None:
    # The batch path checks every device's chain in one vectorised call; grouping must not
    # change a single decision: two batches of all devices decide as each device's own.
    fixes = [
        fix(east, s, i + 1, src=src, device=device, received_after_s=after)
        for i, (device, east, s, src, after) in enumerate(rows)
    ]
    first, second = fixes[: cut % len(fixes)], fixes[cut % len(fixes) :]
    checks, outcomes = judge({}, first)
    checks, later = judge(checks, second)
    together = sorted((o.device_id, o.clears, o.reason, o.fix.seq) for o in [*outcomes, *later])
    alone = []
    for device in {f.device_id for f in fixes}:
        own_checks, own = judge({}, [f for f in first if f.device_id == device])
        own_checks, own_later = judge(own_checks, [f for f in second if f.device_id == device])
        assert own_checks.get(device) == checks.get(device)
        alone += [(o.device_id, o.clears, o.reason, o.fix.seq) for o in [*own, *own_later]]
    assert together == sorted(alone)
