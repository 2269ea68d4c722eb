"""monitor.rules.schedule.Schedule.active_many: the same answers as `active`, many at once,
across daylight-saving changes, overnight windows and exceptions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.rules.schedule import Schedule, epoch_us, parse

PROPERTY = settings(database=None, deadline=None, max_examples=60)

SCHEDULES = [
    parse({"weekly": [{"from": "21:00", "to": "07:00"}]}),
    parse({"weekly": [{"days": ["mon", "wed", "fri"], "from": "02:30", "to": "03:30"}]}),
    parse({"weekly": [{"days": ["sat"], "from": "00:00", "to": "24:00"}]}),
    parse({"weekly": [{"days": ["sun"], "from": "09:00", "to": "09:00"}]}),
    parse(
        {
            "weekly": [{"from": "20:00", "to": "06:00"}],
            "except": [{"from": "2026-03-29T00:30:00Z", "to": "2026-03-29T05:00:00Z"}],
        }
    ),
    parse({"except": [{"from": "2026-11-01T05:00:00Z", "to": "2026-11-01T07:00:00Z"}]}),
]
ZONES = [
    "Europe/Berlin",  # DST on 2026-03-29 and 2026-10-25
    "America/New_York",  # DST on 2026-03-08 and 2026-11-01
    "Asia/Almaty",
    "Australia/Lord_Howe",  # a half-hour DST shift
    "Asia/Kathmandu",  # +05:45
]
CHANGES = [
    datetime(2026, 3, 29, 0, 0, tzinfo=UTC),
    datetime(2026, 10, 25, 0, 0, tzinfo=UTC),
    datetime(2026, 3, 8, 6, 0, tzinfo=UTC),
    datetime(2026, 11, 1, 5, 0, tzinfo=UTC),
    datetime(2026, 4, 4, 14, 0, tzinfo=UTC),
]


def both(schedule: Schedule, instants: list[datetime], zone: str) -> tuple[list[bool], list[bool]]:
    us = np.array([epoch_us(t) for t in instants], dtype=np.int64)
    many = schedule.active_many(us, zone).tolist()
    one = [schedule.active(t, zone) for t in instants]
    return many, one


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_minute_around_each_change(schedule: Schedule, zone: str) -> None:
    instants = [
        change + timedelta(minutes=m, seconds=s)
        for change in CHANGES
        for m in range(-36 * 60, 36 * 60, 7)
        for s in (0, 59)
    ]
    many, one = both(schedule, instants, zone)
    assert many == one


@PROPERTY
@given(
    st.lists(st.integers(0, 400 * 86_400 * 10**6), min_size=1, max_size=50),
    st.sampled_from(SCHEDULES),
    st.sampled_from(ZONES),
)
def test_random_instants(offsets_us: list[int], schedule: Schedule, zone: str) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    instants = [base + timedelta(microseconds=o) for o in offsets_us]
    many, one = both(schedule, instants, zone)
    assert many == one


def test_edges_and_shapes() -> None:
    schedule = SCHEDULES[0]
    assert schedule.active_many(np.empty(0, dtype=np.int64), "UTC").tolist() == []
    t = datetime(2026, 11, 22, 21, 0, tzinfo=UTC)
    assert epoch_us(t) == int(t.timestamp()) * 1_000_000
    assert epoch_us(t + timedelta(microseconds=1)) == epoch_us(t) + 1
    us = np.array([epoch_us(t - timedelta(microseconds=1)), epoch_us(t)], dtype=np.int64)
    assert schedule.active_many(us, "UTC").tolist() == [False, True]
    # The schedule's own time zone wins over the subject's.
    own = parse({"timezone": "Asia/Almaty", "weekly": [{"from": "21:00", "to": "07:00"}]})
    at_2100_almaty = np.array([epoch_us(datetime(2026, 11, 22, 16, 0, tzinfo=UTC))])
    assert own.active_many(at_2100_almaty, "Europe/Berlin").tolist() == [True]
