"""Weekly schedules in the subject's IANA time zone, with one-off exceptions.

A schedule says when a rule is in force, e.g. a curfew "must be at home 21:00–07:00 on
weekdays, except on 2026-12-01 09:00–13:00 (court date)". Times of day are wall-clock
times in the zone, so 21:00 stays 21:00 across daylight-saving changes; a window whose
end is not after its start runs past midnight into the next day.

JSON form (a zone's `properties.schedule`):

    {"timezone": "Europe/Berlin",              # optional; default the subject's
     "weekly": [{"days": ["mon", "tue"], "from": "21:00", "to": "07:00"}],
     "except": [{"from": "2026-12-01T09:00:00Z", "to": "2026-12-01T13:00:00Z"}]}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["DAYS", "Schedule", "ScheduleError", "Window", "parse"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ScheduleError(ValueError):
    """A schedule that cannot be understood; the message names the problem."""


@dataclass(frozen=True, slots=True)
class Window:
    days: frozenset[int]  # 0 = Monday, as datetime.weekday()
    start: time
    end: time

    def contains(self, local: datetime) -> bool:
        clock = local.time().replace(tzinfo=None)
        day = local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= clock < self.end
        # Past midnight: the evening part belongs to the listed day, the morning part to
        # the day after it.
        if day in self.days and clock >= self.start:
            return True
        return (day - 1) % 7 in self.days and clock < self.end


@dataclass(frozen=True, slots=True)
class Schedule:
    timezone: str | None
    weekly: tuple[Window, ...]
    exceptions: tuple[tuple[datetime, datetime], ...]

    def active(self, t: datetime, default_timezone: str) -> bool:
        """Whether the schedule is in force at the instant `t` (aware)."""
        if any(start <= t < end for start, end in self.exceptions):
            return False
        if not self.weekly:
            return True
        local = t.astimezone(ZoneInfo(self.timezone or default_timezone))
        return any(w.contains(local) for w in self.weekly)


def _clock(value: object, where: str) -> time:
    if not isinstance(value, str):
        raise ScheduleError(f"{where}: expected a time of day like '21:00'")
    try:
        hours, minutes = value.split(":")
        if hours == "24" and minutes == "00":
            return time(23, 59, 59, 999999)
        return time(int(hours), int(minutes))
    except ValueError:
        raise ScheduleError(f"{where}: {value!r} is not a time of day like '21:00'") from None


def _instant(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise ScheduleError(f"{where}: expected an ISO 8601 instant")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ScheduleError(f"{where}: {value!r} is not an ISO 8601 instant") from None
    if parsed.tzinfo is None:
        raise ScheduleError(f"{where}: {value!r} has no UTC offset")
    return parsed


def parse(raw: Mapping[str, Any]) -> Schedule:
    if not isinstance(raw, Mapping):
        raise ScheduleError("schedule: expected an object")
    unknown = set(raw) - {"timezone", "weekly", "except"}
    if unknown:
        raise ScheduleError(f"schedule: unknown field(s) {sorted(unknown)}")
    tz = raw.get("timezone")
    if tz is not None:
        try:
            ZoneInfo(str(tz))
        except (ZoneInfoNotFoundError, ValueError):
            raise ScheduleError(f"schedule.timezone: unknown time zone {tz!r}") from None
    windows: list[Window] = []
    for i, w in enumerate(raw.get("weekly") or []):
        where = f"schedule.weekly[{i}]"
        if not isinstance(w, Mapping):
            raise ScheduleError(f"{where}: expected an object")
        days = w.get("days", list(DAYS))
        if not isinstance(days, list) or not days or any(d not in DAYS for d in days):
            raise ScheduleError(f"{where}.days: expected a list of {', '.join(DAYS)}")
        start, end = _clock(w.get("from"), f"{where}.from"), _clock(w.get("to"), f"{where}.to")
        windows.append(Window(frozenset(DAYS.index(d) for d in days), start, end))
    exceptions: list[tuple[datetime, datetime]] = []
    for i, e in enumerate(raw.get("except") or []):
        where = f"schedule.except[{i}]"
        if not isinstance(e, Mapping):
            raise ScheduleError(f"{where}: expected an object")
        start_t, end_t = (
            _instant(e.get("from"), f"{where}.from"),
            _instant(e.get("to"), f"{where}.to"),
        )
        if end_t <= start_t:
            raise ScheduleError(f"{where}: 'to' must be after 'from'")
        if end_t - start_t > timedelta(days=366):
            raise ScheduleError(f"{where}: an exception longer than a year is not an exception")
        exceptions.append((start_t, end_t))
    return Schedule(str(tz) if tz is not None else None, tuple(windows), tuple(exceptions))
