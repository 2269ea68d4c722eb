"""Weekly schedules in the subject's IANA time zone, with one-off exceptions.

A schedule says when a rule is in force, e.g. a curfew "must be at home 21:00–07:00 on
weekdays, except on 2026-12-01 09:00–13:00 (court date)". Times of day are wall-clock
times in the zone, so 21:00 stays 21:00 across daylight-saving changes; a window whose
end is not after its start runs past midnight into the next day.

JSON form (a zone's `properties.schedule`):

    {"timezone": "Europe/Berlin",              # optional; default the subject's
     "weekly": [{"days": ["mon", "tue"], "from": "21:00", "to": "07:00"}],
     "except": [{"from": "2026-12-01T09:00:00Z", "to": "2026-12-01T13:00:00Z"}],
     "grace_min": 5,                           # optional: the window binds from start+5
     "check": "during"}                        # or "start" / "end", below

`grace_min`: a rule binds only once its window has been open this long (a subject
walking home at 21:02 is not in breach of a 21:00 curfew); unset, a curfew (a home or
inclusion zone) gets `CURFEW_GRACE_S` from `book.py`, others none. `check`: `during`
(the default) binds for the whole window; `start` only for `check_min` (default 15)
minutes after the window opens (plus grace): "must be in at the start"; `end` only for
the `check_min` minutes before it closes: "must be in at the end".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from numpy.typing import NDArray

__all__ = ["CHECKS", "DAYS", "Schedule", "ScheduleError", "Window", "epoch_us", "parse"]

_US_PER_DAY: Final = 86_400_000_000
# Offsets are looked up once per quarter hour of UTC, checked at both ends of it.
_BUCKET_US: Final = 900_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_us(t: datetime) -> int:
    """Microseconds since 1970-01-01 UTC, exactly (the unit of ``Schedule.active_many``)."""
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _clock_us(c: time) -> int:
    return ((c.hour * 60 + c.minute) * 60 + c.second) * 1_000_000 + c.microsecond


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


CHECKS = ("during", "start", "end")


@dataclass(frozen=True, slots=True)
class Schedule:
    timezone: str | None
    weekly: tuple[Window, ...]
    exceptions: tuple[tuple[datetime, datetime], ...]
    grace_s: float | None = None  # None: not given (a curfew then gets the default)
    check: str = "during"
    check_s: float = 900.0

    def active(self, t: datetime, default_timezone: str) -> bool:
        """Whether the schedule binds at the instant `t` (aware): its window is open,
        past the grace, and within the part the check looks at."""
        if not self._open(t, default_timezone):
            return False
        grace = timedelta(seconds=self.grace_s or 0.0)
        check = timedelta(seconds=self.check_s)
        if grace and not self._open(t - grace, default_timezone):
            return False
        if self.check == "start":
            return not self._open(t - grace - check, default_timezone)
        if self.check == "end":
            return not self._open(t + check, default_timezone)
        return True

    def _open(self, t: datetime, default_timezone: str) -> bool:
        if any(start <= t < end for start, end in self.exceptions):
            return False
        if not self.weekly:
            return True
        local = t.astimezone(ZoneInfo(self.timezone or default_timezone))
        return any(w.contains(local) for w in self.weekly)

    def active_many(self, t_us: NDArray[np.int64], default_timezone: str) -> NDArray[np.bool_]:
        """``active`` for many instants at once, given as microseconds since the epoch
        (``epoch_us``); the same answers, elementwise."""
        t = np.asarray(t_us, dtype=np.int64)
        out = self._open_many(t, default_timezone)
        grace = round((self.grace_s or 0.0) * 1_000_000)
        check = round(self.check_s * 1_000_000)
        if grace:
            out &= self._open_many(t - grace, default_timezone)
        if self.check == "start":
            out &= ~self._open_many(t - grace - check, default_timezone)
        elif self.check == "end":
            out &= ~self._open_many(t + check, default_timezone)
        return out

    def _open_many(self, t_us: NDArray[np.int64], default_timezone: str) -> NDArray[np.bool_]:
        """Whether the window is open (exceptions aside) at each instant.

        The UTC offset is looked up once per quarter hour of UTC that the instants fall in
        and checked at both ends of it; a quarter hour holding a change of offset (which
        tzdata puts on whole quarter hours since the 1970s, so in practice never) is
        looked up instant by instant.
        """
        t = np.asarray(t_us, dtype=np.int64)
        out = np.zeros(t.shape, dtype=np.bool_)
        if t.size == 0:
            return out
        excepted = np.zeros(t.shape, dtype=np.bool_)
        for start, end in self.exceptions:
            excepted |= (t >= epoch_us(start)) & (t < epoch_us(end))
        if not self.weekly:
            return ~excepted
        zone = ZoneInfo(self.timezone or default_timezone)
        bucket = t // _BUCKET_US
        keys, where = np.unique(bucket, return_inverse=True)
        offsets = np.empty(keys.size, dtype=np.int64)
        exact = np.zeros(keys.size, dtype=np.bool_)
        for i, key in enumerate(keys.tolist()):
            first = _EPOCH + timedelta(microseconds=key * _BUCKET_US)
            last = first + timedelta(microseconds=_BUCKET_US - 1)
            a, b = first.astimezone(zone).utcoffset(), last.astimezone(zone).utcoffset()
            assert a is not None
            assert b is not None
            offsets[i] = a // timedelta(microseconds=1)
            exact[i] = a != b
        local = t + offsets[where.reshape(t.shape)]
        odd = exact[where.reshape(t.shape)]
        if np.any(odd):
            for i in np.flatnonzero(odd.ravel()).tolist():
                instant = _EPOCH + timedelta(microseconds=int(t.ravel()[i]))
                off = instant.astimezone(zone).utcoffset()
                assert off is not None
                local.ravel()[i] = t.ravel()[i] + off // timedelta(microseconds=1)
        day = local // _US_PER_DAY
        clock = local - day * _US_PER_DAY
        weekday = (day + 3) % 7  # 1970-01-01 was a Thursday
        prev = (weekday - 1) % 7
        for w in self.weekly:
            days = np.zeros(7, dtype=np.bool_)
            days[list(w.days)] = True
            opens, closes = _clock_us(w.start), _clock_us(w.end)
            if opens < closes:
                out |= days[weekday] & (clock >= opens) & (clock < closes)
            else:
                out |= (days[weekday] & (clock >= opens)) | (days[prev] & (clock < closes))
        return out & ~excepted


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
    unknown = set(raw) - {"timezone", "weekly", "except", "grace_min", "check", "check_min"}
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
    grace = raw.get("grace_min")
    if grace is not None and (
        isinstance(grace, bool) or not isinstance(grace, int | float) or not 0 <= grace <= 240
    ):
        raise ScheduleError("schedule.grace_min: expected minutes between 0 and 240")
    check = raw.get("check", "during")
    if check not in CHECKS:
        raise ScheduleError(f"schedule.check: expected one of {', '.join(CHECKS)}")
    check_min = raw.get("check_min", 15)
    if (
        isinstance(check_min, bool)
        or not isinstance(check_min, int | float)
        or not (0 < check_min <= 720)
    ):
        raise ScheduleError("schedule.check_min: expected minutes between 1 and 720")
    return Schedule(
        str(tz) if tz is not None else None,
        tuple(windows),
        tuple(exceptions),
        grace_s=float(grace) * 60 if grace is not None else None,
        check=str(check),
        check_s=float(check_min) * 60,
    )
