"""Plausibility: fixes that cannot be right as they stand. Flags, never drops.

Two checks, pure functions over sequences of fixes (the caller keeps the state):

- impossible speed: between consecutive fixes of one device (in fix-time order), the
  geodesic distance minus both accuracy radii, over the time between them, above
  `Limits.max_speed_m_s` (70 m/s, about 250 km/h, by default: no bracelet wearer
  travels faster on the ground; raise it for subjects allowed to fly). Fixes from sources
  without a meaningful position (`Limits.ignore_sources`: the home beacon, cell-tower
  fixes) are left out: the next fix is compared with the one before them. Two fixes at
  the same instant that are apart by more than their accuracies are impossible too. A
  single spoofed or wild fix between good ones is flagged twice: into it and out of it.
- future fix time: a fix stamped more than `Limits.future_tolerance_s` after it was
  received (the device's clock runs ahead, or the time is forged).

Either is suspected spoofing (`AlertKind.SPOOFING`, serious by default). The fixes stay
stored and judged by the rules as they are; a flag only raises the alert.

`judge` turns the checks into alert decisions for each device: the first flag opens a
spoofing alert (later ones update it), and `Limits.clear_after` consecutive plausible
fixes after the last flag clear it: every alert kind has its clear.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import numpy as np

from geofences.geodesy import distance_m
from monitor.domain import DEFAULT_SEVERITY, AlertKind, Fix, Severity

__all__ = [
    "DeviceCheck",
    "Flag",
    "Limits",
    "Outcome",
    "Problem",
    "future_fixes",
    "impossible_speeds",
    "judge",
]


@dataclass(frozen=True, slots=True)
class Limits:
    max_speed_m_s: float = 70.0
    future_tolerance_s: float = 120.0
    ignore_sources: frozenset[str] = frozenset({"beacon", "cell"})
    clear_after: int = 10  # consecutive plausible fixes that clear a spoofing alert


class Problem(StrEnum):
    SPEED = "impossible_speed"
    FUTURE = "future_fix"


@dataclass(frozen=True, slots=True)
class Flag:
    problem: Problem
    fix: Fix  # the fix flagged (for a speed, the later of the two)
    reason: str
    previous: Fix | None = None  # for a speed: the fix before it
    speed_m_s: float | None = None  # the least speed the two fixes need, accuracies granted
    ahead_s: float | None = None  # for a future fix: how far its time is past its receipt

    @property
    def kind(self) -> AlertKind:
        return AlertKind.SPOOFING

    @property
    def detail(self) -> dict[str, object]:
        """What an alert's `detail` should say about the flag (JSON-ready)."""
        out: dict[str, object] = {"problem": self.problem.value, "reason": self.reason}
        if self.speed_m_s is not None:
            out["speed_m_s"] = round(self.speed_m_s, 1) if np.isfinite(self.speed_m_s) else None
        if self.ahead_s is not None:
            out["ahead_s"] = round(self.ahead_s, 1)
        if self.previous is not None:
            out["previous"] = {
                "seq": self.previous.seq,
                "t": self.previous.t.isoformat(),
                "lat": self.previous.lat,
                "lon": self.previous.lon,
                "acc": self.previous.acc,
            }
        return out


def _order(fixes: Sequence[Fix]) -> list[Fix]:
    return sorted(fixes, key=lambda f: (f.t, f.seq or 0))


def impossible_speeds(
    fixes: Sequence[Fix],
    limits: Limits = Limits(),
    previous: Mapping[str, Fix] | None = None,
) -> list[Flag]:
    """Speed flags for consecutive fixes of each device, in fix-time order; `previous`
    holds the last fix already checked of each device (it starts that device's chain).
    Vectorised: one geodesic distance call for every pair."""
    chains: dict[str, list[Fix]] = {}
    for f in _order([f for f in fixes if f.src not in limits.ignore_sources]):
        chain = chains.setdefault(f.device_id, [])
        if not chain and previous is not None and f.device_id in previous:
            before = previous[f.device_id]
            if before.src not in limits.ignore_sources and (before.t, before.seq or 0) <= (
                f.t,
                f.seq or 0,
            ):
                chain.append(before)
        chain.append(f)
    return _speed_flags(chains.values(), limits)


def _speed_flags(chains: Iterable[Sequence[Fix]], limits: Limits) -> list[Flag]:
    """Speed flags along chains of fixes already in fix-time order, each of one device
    and without the sources speeds ignore: one geodesic distance call for them all."""
    a: list[Fix] = []
    b: list[Fix] = []
    for chain in chains:
        a.extend(chain[:-1])
        b.extend(chain[1:])
    if not a:
        return []
    d = distance_m(
        np.array([f.lon for f in a]),
        np.array([f.lat for f in a]),
        np.array([f.lon for f in b]),
        np.array([f.lat for f in b]),
    )
    slack = np.array([f.acc for f in a]) + np.array([f.acc for f in b])
    dt = np.array([(y.t - x.t).total_seconds() for x, y in zip(a, b, strict=True)])
    excess = np.maximum(d - slack, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        speed = np.where(dt > 0, excess / np.where(dt > 0, dt, 1.0), np.inf)
    bad = (excess > 0.0) & (speed > limits.max_speed_m_s)
    flags = []
    for i in np.flatnonzero(bad).tolist():
        v = float(speed[i])
        moved = float(d[i])
        reason = (
            f"moved {moved:.0f} m in {dt[i]:.0f} s: at least {v:.0f} m/s with the accuracies"
            f" granted (at most {limits.max_speed_m_s:.0f} m/s)"
            if np.isfinite(v)
            else f"two fixes at the same time {moved:.0f} m apart, beyond their accuracies"
        )
        flags.append(Flag(Problem.SPEED, b[i], reason, previous=a[i], speed_m_s=v))
    return flags


def future_fixes(fixes: Sequence[Fix], limits: Limits = Limits()) -> list[Flag]:
    """Fixes stamped more than `future_tolerance_s` after they were received."""
    return _future(_order(fixes), limits)


def _future(fixes: Iterable[Fix], limits: Limits) -> list[Flag]:
    flags = []
    for f in fixes:
        ahead = (f.t - f.received_at).total_seconds()
        if ahead > limits.future_tolerance_s:
            reason = (
                f"fix time {ahead:.0f} s after it was received"
                f" (tolerance {limits.future_tolerance_s:.0f} s): the device clock runs ahead"
            )
            flags.append(Flag(Problem.FUTURE, f, reason, ahead_s=ahead))
    return flags


@dataclass(frozen=True, slots=True)
class DeviceCheck:
    """What `judge` keeps per device between batches."""

    last: Fix | None = None  # the last fix in the speed chain
    flagged: bool = False  # a spoofing alert is open for the device
    plausible: int = 0  # plausible fixes since the last flag


@dataclass(frozen=True, slots=True)
class Outcome:
    """Open (or add to) the device's spoofing alert, or clear it."""

    device_id: str
    clears: bool
    reason: str
    fix: Fix
    flag: Flag | None = None  # None for a clear

    @property
    def kind(self) -> AlertKind:
        return AlertKind.SPOOFING

    @property
    def severity(self) -> Severity:
        return DEFAULT_SEVERITY[AlertKind.SPOOFING]


def _at(f: Fix) -> tuple[datetime, int]:
    return (f.t, f.seq or 0)


def judge(
    checks: Mapping[str, DeviceCheck], fixes: Sequence[Fix], limits: Limits = Limits()
) -> tuple[dict[str, DeviceCheck], list[Outcome]]:
    """Flags for a batch of fixes (any devices, any order), as alert decisions.

    Returns the new checks of the devices seen and, in fix-time order, one Outcome per
    flag (`clears=False`: open the device's spoofing alert, or update the open one) and
    one when `clear_after` plausible fixes in a row follow the last flag (`clears=True`).
    Fixes older than the device's last checked one (late) are checked among
    themselves and for their time, but do not move the chain or count as plausible.
    """
    out: dict[str, DeviceCheck] = {}
    outcomes: list[Outcome] = []
    by_device: dict[str, list[Fix]] = {}
    for f in fixes:
        by_device.setdefault(f.device_id, []).append(f)
    split: dict[str, tuple[DeviceCheck, list[Fix], list[Fix]]] = {}
    previous: dict[str, Fix] = {}
    for device_id, own in by_device.items():
        check = checks.get(device_id, DeviceCheck())
        ordered = _order(own)
        if check.last is not None:
            cut = bisect_left(ordered, _at(check.last), key=_at)  # ordered by _at
            live, late = ordered[cut:], ordered[:cut]
            previous[device_id] = check.last
        else:
            live, late = ordered, []
        split[device_id] = (check, live, late)
    # Every device's chain at once (one vectorised call for the whole batch, not one per
    # device): live fixes continue from the device's last checked fix, late ones are
    # checked among themselves.
    ignored = limits.ignore_sources
    live_chains = []
    late_chains = []
    for device_id, (_, live, late) in split.items():
        before = previous.get(device_id)
        head = [before] if before is not None and before.src not in ignored else []
        live_chains.append(head + [f for f in live if f.src not in ignored])
        late_chains.append([f for f in late if f.src not in ignored])
    all_live = [f for _, live, _ in split.values() for f in live]
    all_late = [f for _, _, late in split.values() for f in late]
    flags_of: dict[str, list[Flag]] = {}
    for flag in [
        *_speed_flags(live_chains, limits),
        *_future(all_live, limits),
        *_speed_flags(late_chains, limits),
        *_future(all_late, limits),
    ]:
        flags_of.setdefault(flag.fix.device_id, []).append(flag)
    for device_id, (check, live, late) in split.items():
        if device_id not in flags_of and not check.flagged:
            # Nothing flagged, nothing open (nearly every device): no outcome, and the
            # chain moves on to the last fix that counts for speeds.
            chain = [f for f in live if f.src not in limits.ignore_sources]
            out[device_id] = DeviceCheck(chain[-1] if chain else check.last, False, 0)
            continue
        flagged_fixes: dict[tuple[datetime, int], list[Flag]] = {}
        for flag in flags_of.get(device_id, []):
            flagged_fixes.setdefault(_at(flag.fix), []).append(flag)
        is_open, plausible = check.flagged, check.plausible
        late_flags = [fl for f in late for fl in flagged_fixes.get(_at(f), [])]
        for flag in late_flags:
            outcomes.append(Outcome(device_id, False, flag.reason, flag.fix, flag))
            is_open, plausible = True, 0
        for f in live:
            found = flagged_fixes.get(_at(f), [])
            for flag in found:
                outcomes.append(Outcome(device_id, False, flag.reason, f, flag))
            if found:
                is_open, plausible = True, 0
            elif f.src not in limits.ignore_sources:
                plausible += 1
                if is_open and plausible >= limits.clear_after:
                    outcomes.append(
                        Outcome(device_id, True, f"{plausible} plausible fixes in a row", f)
                    )
                    is_open = False
        chain = [f for f in live if f.src not in limits.ignore_sources]
        last = chain[-1] if chain else check.last
        out[device_id] = DeviceCheck(last, is_open, plausible if is_open else 0)
    outcomes.sort(key=lambda o: _at(o.fix))
    return out, outcomes
