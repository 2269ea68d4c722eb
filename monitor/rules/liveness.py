"""Liveness: is each device still talking, still locating, still powered?

Pure: the caller passes what it knows of a device (`DeviceStatus`), what is already open
for it (`LivenessState`) and `now`; `judge` returns the new state and the alert changes,
OPEN when a condition begins and CLEAR when it ends, so every kind has its clear:

- `comms_loss`: opens when nothing was uploaded for the device's upload interval plus
  `comms_buffer_s` (counted from when monitoring began if nothing came yet); clears
  with an upload within that time.
- `location_loss`: opens when uploads continue but no fix came for `location_loss_s`
  (or twice the fix interval, if longer), or when a `no_fix` event is newer than the
  last fix; clears with a fix newer than the last `no_fix` event, within that time.
- `battery`: opens at or below `battery_critical_pct` when not charging; clears when
  charging or back at `battery_clear_pct` or above (hysteresis).

All three are serious (`domain.DEFAULT_SEVERITY`).
Silence is never compliance: while communication is lost, location is not decided
either way (an open location_loss stays open, none opens). Times of uploads are receipt
times (the service's clock); fix times are the device's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from monitor.domain import DEFAULT_SEVERITY, AlertKind, Severity
from monitor.rules.engine import Change

__all__ = [
    "DeviceStatus",
    "LivenessChange",
    "LivenessState",
    "Policy",
    "judge",
    "judge_all",
    "quiet_until",
    "reporting_allowance",
]


@dataclass(frozen=True, slots=True)
class Policy:
    comms_buffer_s: float = 120.0
    location_loss_s: float = 900.0
    battery_critical_pct: int = 10
    battery_clear_pct: int = 20


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    device_id: str
    monitored_since: datetime  # when the device was fitted: silence counts from here
    upload_interval_s: float
    fix_interval_s: float
    last_upload_at: datetime | None = None  # received_at of its latest message
    last_fix_t: datetime | None = None  # fix time of its latest fix
    no_fix_at: datetime | None = None  # time of its latest `no_fix` event
    battery_pct: int | None = None  # latest known battery level
    charging: bool = False


@dataclass(frozen=True, slots=True)
class LivenessState:
    open: frozenset[AlertKind] = frozenset()


@dataclass(frozen=True, slots=True)
class LivenessChange:
    device_id: str
    kind: AlertKind
    change: Change  # OPEN or CLEAR
    reason: str
    since: datetime | None  # when the condition began (OPEN) or ended (CLEAR), if known

    @property
    def severity(self) -> Severity:
        return DEFAULT_SEVERITY[self.kind]


def _s(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def judge(
    device: DeviceStatus, state: LivenessState, now: datetime, policy: Policy = Policy()
) -> tuple[LivenessState, list[LivenessChange]]:
    """Decide comms_loss, location_loss and battery for one device at `now`."""
    is_open = set(state.open)
    changes: list[LivenessChange] = []

    def move(kind: AlertKind, lost: bool, reason: str, since: datetime | None) -> None:
        if lost and kind not in is_open:
            is_open.add(kind)
            changes.append(LivenessChange(device.device_id, kind, Change.OPEN, reason, since))
        elif not lost and kind in is_open:
            is_open.discard(kind)
            changes.append(LivenessChange(device.device_id, kind, Change.CLEAR, reason, since))

    heard = device.last_upload_at or device.monitored_since
    allowed = timedelta(seconds=device.upload_interval_s + policy.comms_buffer_s)
    silent = now - heard
    comms_lost = silent > allowed
    move(
        AlertKind.COMMS_LOSS,
        comms_lost,
        f"no upload for {_s(silent.total_seconds())} (allowed {_s(allowed.total_seconds())})"
        if comms_lost
        else "uploads resumed",
        heard if comms_lost else device.last_upload_at,
    )

    if not comms_lost:
        located = device.last_fix_t or device.monitored_since
        window = timedelta(seconds=max(policy.location_loss_s, 2 * device.fix_interval_s))
        stale = now - located > window
        reported = device.no_fix_at is not None and (
            device.last_fix_t is None or device.no_fix_at > device.last_fix_t
        )
        if reported:
            reason = "the device reports no fix since its last position"
        elif stale:
            reason = (
                f"uploads continue but no fix for {_s((now - located).total_seconds())}"
                f" (allowed {_s(window.total_seconds())})"
            )
        else:
            reason = "fixes resumed"
        lost = stale or reported
        since = (device.no_fix_at if reported else located) if lost else device.last_fix_t
        move(AlertKind.LOCATION_LOSS, lost, reason, since)

    if device.battery_pct is not None:
        pct = device.battery_pct
        if device.charging or pct >= policy.battery_clear_pct:
            move(
                AlertKind.BATTERY, False, "charging" if device.charging else f"battery {pct}%", now
            )
        elif pct <= policy.battery_critical_pct:
            move(
                AlertKind.BATTERY,
                True,
                f"battery {pct}% (critical at {policy.battery_critical_pct}%)",
                now,
            )
    elif device.charging:
        move(AlertKind.BATTERY, False, "charging", now)
    return LivenessState(frozenset(is_open)), changes


def quiet_until(device: DeviceStatus, policy: Policy = Policy()) -> datetime | None:
    """Until when (inclusive) `judge` surely changes nothing for this device while
    nothing is open for it and nothing new is heard of it: the earliest moment its
    comms_loss or location_loss could open. None if something could open now (a no_fix
    newer than its last fix, a critical battery). A caller watching 100,000 devices
    judges again only those heard since, or whose time has come."""
    if device.no_fix_at is not None and (
        device.last_fix_t is None or device.no_fix_at > device.last_fix_t
    ):
        return None
    if (
        device.battery_pct is not None
        and not device.charging
        and device.battery_pct <= policy.battery_critical_pct
    ):
        return None
    heard = device.last_upload_at or device.monitored_since
    located = device.last_fix_t or device.monitored_since
    return min(
        heard + timedelta(seconds=device.upload_interval_s + policy.comms_buffer_s),
        located + timedelta(seconds=max(policy.location_loss_s, 2 * device.fix_interval_s)),
    )


def judge_all(
    devices: Iterable[DeviceStatus],
    states: Mapping[str, LivenessState],
    now: datetime,
    policy: Policy = Policy(),
) -> tuple[dict[str, LivenessState], list[LivenessChange]]:
    """`judge` for many devices; returns the states of those given and every change."""
    out: dict[str, LivenessState] = {}
    changes: list[LivenessChange] = []
    for device in devices:
        out[device.device_id], found = judge(
            device, states.get(device.device_id, LivenessState()), now, policy
        )
        changes += found
    return out, changes


def reporting_allowance(
    kind: str, upload_interval_s: float, fix_interval_s: float
) -> tuple[float, float]:
    """The upload and fix intervals liveness holds a device of `kind` to. Phones running
    OwnTracks report on movement, not on a clock: four hours of silence (as Smart Astana
    used) before it counts as lost, and a fix within a quarter of that."""
    if kind == "owntracks":
        upload_s = 4 * 3600.0
        return upload_s, max(fix_interval_s, upload_s / 4)
    return upload_interval_s, fix_interval_s
