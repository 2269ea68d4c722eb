"""monitor.rules.schedule: weekly windows in IANA zones, with exceptions."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from monitor.rules.schedule import Schedule, ScheduleError, Window, parse

BERLIN = "Europe/Berlin"
ALMATY = "Asia/Almaty"  # UTC+5 all year since 2024-03-01 (tzdata 2024a)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(tz: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(tz))  # type: ignore[misc]


def weekly(days: list[str], start: str, end: str, tz: str | None = BERLIN) -> Schedule:
    raw: dict[str, Any] = {"weekly": [{"days": days, "from": start, "to": end}]}
    if tz is not None:
        raw["timezone"] = tz
    return parse(raw)


# --- weekday windows ----------------------------------------------------------------------

OFFICE = ["mon", "tue", "wed", "thu", "fri"]


@pytest.mark.parametrize(
    ("when", "active"),
    [
        pytest.param(local(BERLIN, 2026, 1, 14, 9, 0), True, id="wed-09:00-start"),
        pytest.param(local(BERLIN, 2026, 1, 14, 12, 30), True, id="wed-12:30"),
        pytest.param(local(BERLIN, 2026, 1, 14, 16, 59), True, id="wed-16:59"),
        pytest.param(local(BERLIN, 2026, 1, 14, 8, 59), False, id="wed-08:59"),
        pytest.param(local(BERLIN, 2026, 1, 14, 17, 0), False, id="wed-17:00-end"),
        pytest.param(local(BERLIN, 2026, 1, 17, 12, 0), False, id="sat-noon"),
        pytest.param(local(BERLIN, 2026, 1, 18, 12, 0), False, id="sun-noon"),
    ],
)
def test_a_weekday_window(when: datetime, active: bool) -> None:
    assert weekly(OFFICE, "09:00", "17:00").active(when, ALMATY) is active


def test_the_window_is_judged_in_local_time_whatever_the_instant_zone() -> None:
    schedule = weekly(OFFICE, "09:00", "17:00")
    # 2026-01-14 08:30 UTC is 09:30 in Berlin (CET, UTC+1).
    assert schedule.active(utc(2026, 1, 14, 8, 30), ALMATY)
    assert not schedule.active(utc(2026, 1, 14, 7, 59), ALMATY)


def test_days_default_to_every_day() -> None:
    schedule = parse({"timezone": BERLIN, "weekly": [{"from": "10:00", "to": "11:00"}]})
    for day in range(12, 19):  # Monday 12 .. Sunday 18 January 2026
        assert schedule.active(local(BERLIN, 2026, 1, day, 10, 30), ALMATY)
        assert not schedule.active(local(BERLIN, 2026, 1, day, 11, 30), ALMATY)


def test_24_00_ends_a_window_at_midnight() -> None:
    schedule = weekly(["wed"], "20:00", "24:00")
    assert schedule.active(local(BERLIN, 2026, 1, 14, 23, 59, 59), ALMATY)
    assert not schedule.active(local(BERLIN, 2026, 1, 15, 0, 0), ALMATY)


def test_several_windows_are_any_of_them() -> None:
    schedule = parse(
        {
            "timezone": BERLIN,
            "weekly": [
                {"days": ["mon"], "from": "08:00", "to": "09:00"},
                {"days": ["tue"], "from": "18:00", "to": "19:00"},
            ],
        }
    )
    assert schedule.active(local(BERLIN, 2026, 1, 12, 8, 30), ALMATY)
    assert schedule.active(local(BERLIN, 2026, 1, 13, 18, 30), ALMATY)
    assert not schedule.active(local(BERLIN, 2026, 1, 12, 18, 30), ALMATY)


def test_no_weekly_windows_means_always() -> None:
    assert parse({}).active(utc(2026, 5, 5, 3, 3), ALMATY)


# --- overnight windows ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "active"),
    [
        # Friday 16 January 2026: the listed evening.
        pytest.param(local(BERLIN, 2026, 1, 16, 20, 59), False, id="fri-20:59"),
        pytest.param(local(BERLIN, 2026, 1, 16, 21, 0), True, id="fri-21:00"),
        pytest.param(local(BERLIN, 2026, 1, 16, 23, 59), True, id="fri-23:59"),
        pytest.param(local(BERLIN, 2026, 1, 17, 0, 0), True, id="sat-00:00"),
        pytest.param(local(BERLIN, 2026, 1, 17, 6, 59), True, id="sat-06:59"),
        pytest.param(local(BERLIN, 2026, 1, 17, 7, 0), False, id="sat-07:00"),
        # Saturday evening is not listed; nor is Friday morning (Thursday's night).
        pytest.param(local(BERLIN, 2026, 1, 17, 22, 0), False, id="sat-22:00"),
        pytest.param(local(BERLIN, 2026, 1, 16, 6, 0), False, id="fri-06:00"),
        pytest.param(local(BERLIN, 2026, 1, 15, 23, 0), False, id="thu-23:00"),
    ],
)
def test_an_overnight_window_belongs_to_the_listed_evening(when: datetime, active: bool) -> None:
    assert weekly(["fri"], "21:00", "07:00").active(when, ALMATY) is active


def test_a_sunday_night_runs_into_monday_morning() -> None:
    schedule = weekly(["sun"], "21:00", "07:00")
    assert schedule.active(local(BERLIN, 2026, 1, 19, 6, 0), ALMATY)  # Monday
    assert not schedule.active(local(BERLIN, 2026, 1, 18, 6, 0), ALMATY)  # Sunday morning


def test_a_window_whose_end_equals_its_start_runs_a_full_day() -> None:
    schedule = weekly(["wed"], "12:00", "12:00")
    assert schedule.active(local(BERLIN, 2026, 1, 14, 12, 0), ALMATY)
    assert schedule.active(local(BERLIN, 2026, 1, 15, 11, 59), ALMATY)
    assert not schedule.active(local(BERLIN, 2026, 1, 15, 12, 0), ALMATY)
    assert not schedule.active(local(BERLIN, 2026, 1, 14, 11, 59), ALMATY)


def test_window_contains_directly() -> None:
    window = Window(frozenset({4}), time(21, 0), time(7, 0))  # Friday night
    assert window.contains(datetime(2026, 1, 16, 21, 0))
    assert window.contains(datetime(2026, 1, 17, 6, 59))
    assert not window.contains(datetime(2026, 1, 17, 21, 0))


# --- daylight-saving changes in Berlin ----------------------------------------------------


@pytest.mark.parametrize(
    ("when", "active"),
    [
        # Sunday 29 March 2026, the day clocks go forward: 21:00 CEST is 19:00 UTC.
        pytest.param(utc(2026, 3, 29, 18, 59), False, id="mar-29-20:59-cest"),
        pytest.param(utc(2026, 3, 29, 19, 0), True, id="mar-29-21:00-cest"),
        pytest.param(utc(2026, 3, 30, 4, 59), True, id="mar-30-06:59-cest"),
        pytest.param(utc(2026, 3, 30, 5, 0), False, id="mar-30-07:00-cest"),
        # Sunday 25 October 2026, the day clocks go back: 21:00 CET is 20:00 UTC.
        pytest.param(utc(2026, 10, 25, 19, 59), False, id="oct-25-20:59-cet"),
        pytest.param(utc(2026, 10, 25, 20, 0), True, id="oct-25-21:00-cet"),
        pytest.param(utc(2026, 10, 26, 5, 59), True, id="oct-26-06:59-cet"),
        pytest.param(utc(2026, 10, 26, 6, 0), False, id="oct-26-07:00-cet"),
    ],
)
def test_21_00_stays_21_00_on_the_days_clocks_change(when: datetime, active: bool) -> None:
    assert weekly(["sun"], "21:00", "07:00").active(when, ALMATY) is active


@pytest.mark.parametrize(
    ("when", "active"),
    [
        # The night of 28-29 March: 21:00 CET (20:00 UTC) .. 07:00 CEST (05:00 UTC).
        pytest.param(utc(2026, 3, 28, 19, 59), False, id="mar-before"),
        pytest.param(utc(2026, 3, 28, 20, 0), True, id="mar-start"),
        pytest.param(utc(2026, 3, 29, 1, 30), True, id="mar-across-the-change"),
        pytest.param(utc(2026, 3, 29, 4, 59), True, id="mar-last-minute"),
        pytest.param(utc(2026, 3, 29, 5, 0), False, id="mar-end"),
        # The night of 24-25 October: 21:00 CEST (19:00 UTC) .. 07:00 CET (06:00 UTC).
        pytest.param(utc(2026, 10, 24, 18, 59), False, id="oct-before"),
        pytest.param(utc(2026, 10, 24, 19, 0), True, id="oct-start"),
        pytest.param(utc(2026, 10, 25, 0, 30), True, id="oct-repeated-hour"),
        pytest.param(utc(2026, 10, 25, 5, 59), True, id="oct-last-minute"),
        pytest.param(utc(2026, 10, 25, 6, 0), False, id="oct-end"),
    ],
)
def test_a_night_across_the_clock_change(when: datetime, active: bool) -> None:
    assert weekly(["sat"], "21:00", "07:00").active(when, ALMATY) is active


# --- Asia/Almaty and the default zone ---------------------------------------------------


def test_the_subjects_zone_applies_when_the_schedule_names_none() -> None:
    schedule = weekly(OFFICE, "21:00", "07:00", tz=None)
    # Monday 1 June 2026, 21:00 in Almaty (UTC+5) is 16:00 UTC.
    assert not schedule.active(utc(2026, 6, 1, 15, 59), ALMATY)
    assert schedule.active(utc(2026, 6, 1, 16, 0), ALMATY)
    assert schedule.active(utc(2026, 6, 2, 1, 59), ALMATY)
    assert not schedule.active(utc(2026, 6, 2, 2, 0), ALMATY)
    # The same instants judged in Berlin (CEST, UTC+2): 16:00 UTC is only 18:00 there.
    assert not schedule.active(utc(2026, 6, 1, 16, 0), BERLIN)


def test_the_schedules_own_zone_wins_over_the_subjects() -> None:
    schedule = weekly(OFFICE, "21:00", "07:00", tz=ALMATY)
    assert schedule.active(utc(2026, 6, 1, 16, 0), BERLIN)
    assert schedule.timezone == ALMATY


def test_almaty_friday_night_ends_saturday_morning_local() -> None:
    schedule = weekly(["fri"], "22:00", "06:00", tz=ALMATY)
    # Friday 5 June 2026 22:00 +05 = 17:00 UTC; Saturday 06:00 +05 = 01:00 UTC.
    assert schedule.active(utc(2026, 6, 5, 17, 0), BERLIN)
    assert schedule.active(utc(2026, 6, 6, 0, 59), BERLIN)
    assert not schedule.active(utc(2026, 6, 6, 1, 0), BERLIN)


# --- exceptions -------------------------------------------------------------------------


def test_an_exception_suspends_the_schedule_for_its_period() -> None:
    schedule = parse(
        {
            "timezone": ALMATY,
            "weekly": [{"days": ["tue"], "from": "09:00", "to": "18:00"}],
            "except": [{"from": "2026-12-01T05:00:00Z", "to": "2026-12-01T08:00:00Z"}],
        }
    )
    # Tuesday 1 December 2026; 05:00 UTC is 10:00 in Almaty.
    assert schedule.active(utc(2026, 12, 1, 4, 59), BERLIN)
    assert not schedule.active(utc(2026, 12, 1, 5, 0), BERLIN)
    assert not schedule.active(utc(2026, 12, 1, 7, 59), BERLIN)
    assert schedule.active(utc(2026, 12, 1, 8, 0), BERLIN)
    assert schedule.active(utc(2026, 12, 8, 6, 0), BERLIN)  # a week later


def test_an_exception_applies_to_an_always_schedule() -> None:
    schedule = parse(
        {"except": [{"from": "2026-12-01T09:00:00+01:00", "to": "2026-12-02T00:00:00Z"}]}
    )
    assert schedule.exceptions[0][0] == utc(2026, 12, 1, 8, 0)
    assert not schedule.active(utc(2026, 12, 1, 8, 0), BERLIN)
    assert schedule.active(utc(2026, 12, 1, 7, 59), BERLIN)


def test_parse_keeps_what_it_read() -> None:
    schedule = parse(
        {
            "timezone": BERLIN,
            "weekly": [{"days": ["mon", "sun"], "from": "21:00", "to": "07:30"}],
            "except": [{"from": "2026-12-01T09:00:00Z", "to": "2026-12-01T13:00:00Z"}],
        }
    )
    assert schedule == Schedule(
        BERLIN,
        (Window(frozenset({0, 6}), time(21, 0), time(7, 30)),),
        ((utc(2026, 12, 1, 9), utc(2026, 12, 1, 13)),),
    )


# --- parse errors name the field ----------------------------------------------------------

GOOD_WINDOW = {"days": ["mon"], "from": "21:00", "to": "07:00"}
GOOD_EXCEPT = {"from": "2026-12-01T09:00:00Z", "to": "2026-12-01T13:00:00Z"}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param({"timezone": "Mars/Olympus_Mons"}, "schedule.timezone", id="tz-unknown"),
        pytest.param({"timezone": "../etc/passwd"}, "schedule.timezone", id="tz-path"),
        pytest.param({"zone": BERLIN}, "unknown field(s) ['zone']", id="unknown-field"),
        pytest.param({"weekly": ["mon"]}, "schedule.weekly[0]", id="window-not-object"),
        pytest.param(
            {"weekly": [GOOD_WINDOW, {**GOOD_WINDOW, "days": ["funday"]}]},
            "schedule.weekly[1].days",
            id="day-unknown",
        ),
        pytest.param(
            {"weekly": [{**GOOD_WINDOW, "days": []}]}, "schedule.weekly[0].days", id="days-empty"
        ),
        pytest.param(
            {"weekly": [{**GOOD_WINDOW, "days": "mon"}]}, "schedule.weekly[0].days", id="days-str"
        ),
        pytest.param(
            {"weekly": [{**GOOD_WINDOW, "from": "25:00"}]}, "schedule.weekly[0].from", id="from-25"
        ),
        pytest.param(
            {"weekly": [{**GOOD_WINDOW, "from": 21}]}, "schedule.weekly[0].from", id="from-int"
        ),
        pytest.param(
            {"weekly": [{"days": ["mon"], "from": "21:00"}]},
            "schedule.weekly[0].to",
            id="to-missing",
        ),
        pytest.param(
            {"weekly": [{**GOOD_WINDOW, "to": "7h"}]}, "schedule.weekly[0].to", id="to-text"
        ),
        pytest.param(
            {"weekly": [{**GOOD_WINDOW, "to": "07:00:00"}]},
            "schedule.weekly[0].to",
            id="to-seconds",
        ),
        pytest.param({"except": [42]}, "schedule.except[0]", id="except-not-object"),
        pytest.param(
            {"except": [GOOD_EXCEPT, {**GOOD_EXCEPT, "from": "tomorrow"}]},
            "schedule.except[1].from",
            id="except-from-text",
        ),
        pytest.param(
            {"except": [{**GOOD_EXCEPT, "to": "2026-12-01T13:00:00"}]},
            "schedule.except[0].to",
            id="except-to-naive",
        ),
        pytest.param(
            {"except": [{**GOOD_EXCEPT, "to": None}]}, "schedule.except[0].to", id="except-no-to"
        ),
        pytest.param(
            {"except": [{**GOOD_EXCEPT, "to": "2026-12-01T09:00:00Z"}]},
            "schedule.except[0]: 'to' must be after 'from'",
            id="except-empty",
        ),
        pytest.param(
            {"except": [{**GOOD_EXCEPT, "to": "2028-01-01T00:00:00Z"}]},
            "schedule.except[0]: an exception longer than a year",
            id="except-too-long",
        ),
    ],
)
def test_parse_errors_name_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse(raw)
    assert field in str(caught.value)


def test_a_schedule_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ScheduleError, match="schedule: expected an object"):
        parse(["mon"])  # type: ignore[arg-type]


def test_a_schedule_error_is_a_value_error() -> None:
    assert issubclass(ScheduleError, ValueError)


def test_one_minute_before_and_after_a_window_edge() -> None:
    schedule = weekly(["wed"], "09:00", "17:00")
    start = local(BERLIN, 2026, 1, 14, 9, 0)
    assert not schedule.active(start - timedelta(minutes=1), ALMATY)
    assert schedule.active(start, ALMATY)
