"""The scenarios: each enrols its subjects and devices, makes its records (stamped in
the past and uploaded in batches, so none takes more than a few seconds of wall time),
and writes what it expects the backend to make of them.

Expectations name only what the backend does today, with windows wide enough for the
decisions made near a boundary (a fix's accuracy circle straddling it) to go either way;
kinds the backend may add later (liveness, spoofing) are written as `may`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from typing import Any
from zoneinfo import ZoneInfo

from device_sim.api import OperatorClient
from device_sim.check import REASON
from device_sim.device import Bracelet
from device_sim.expect import iso_ms
from device_sim.phone import location, status
from device_sim.roster import HOME_RADIUS_M, TIMEZONE
from device_sim.scenarios.base import (
    MINUTE_MS,
    FixSpec,
    Play,
    Scenario,
    Wait,
    first_violation,
    legs,
    outside_circle,
    polar,
    trace,
)
from device_sim.signature import b64url
from device_sim.tracks import Plan, compliant_plan, destination, to_local

__all__ = ["SCENARIOS"]

# Retries of what the backend cannot acknowledge (OwnTracks, a forged upload, the will):
# how long to wait before sending it again.
_AGAIN_S = 5.0


def _window(
    fixes: list[FixSpec], wrong_m: Callable[[FixSpec], float], after: int = 2
) -> tuple[int, int]:
    """Fix-time window for the alert of the first confirmed violation: from the first fix
    that might already be judged a violation (a few centimetres of geodesy either way)
    to `after` fixes past the first one that certainly is."""
    i = first_violation(fixes, wrong_m)
    if i is None:
        raise RuntimeError("the generated track never violates: the scenario is broken")
    lo = next(k for k, f in enumerate(fixes) if wrong_m(f) > f.acc - 2.0)
    hi = min(i + after, len(fixes) - 1)
    return fixes[lo].t_ms, fixes[hi].t_ms + 1


def _never_out(fixes: list[FixSpec], wrong_m: Callable[[FixSpec], float]) -> None:
    worst = max(wrong_m(f) + f.acc for f in fixes)
    if worst >= 0:
        raise RuntimeError(f"a compliant track comes {worst:.0f} m too close: scenario broken")


def _around(t_ms: int, ms: int = 1000) -> tuple[int, int]:
    return t_ms - ms, t_ms + ms + 1


def _excursion(
    bearing: float, away_m: float, ride_mps: float, home_s: float, away_s: float
) -> Plan:
    """Home for `home_s`, ride `away_m` out on `bearing`, stay `away_s`, ride back."""
    far = polar(away_m, bearing)
    ride = away_m / ride_mps
    wander = polar(away_m * 1.05, bearing + 0.08)
    return legs(
        ((0.0, 0.0), home_s),
        (far, ride),
        (wander, away_s / 2),
        (far, away_s / 2),
        ((0.0, 0.0), ride),
        ((0.0, 0.0), 3600.0),
    )


class LeaveRadius(Scenario):
    name = "leave-radius"
    code = "LR"
    summary = (
        "a yellow subject rides 900 m from home and back (zone_exit, cleared); "
        "a neighbour who keeps within 300 m (none)"
    )

    def prepare(self) -> None:
        ctx = self.ctx
        t0 = ctx.t(-40 * 60)
        since = ctx.t(-3 * 3600)
        self.fixes: list[tuple[Bracelet, list[FixSpec]]] = []
        for n, code in enumerate(("LR1", "LR2")):
            home = self.home(n)
            subject = ctx.subject(self.name, code)
            ctx.yellow(subject, home, since)
            bracelet = ctx.bracelet(self.name, code, subject, since, batch_size=8)
            wrong = outside_circle(home, HOME_RADIUS_M)
            if n == 0:
                plan = _excursion(float(self.rng.uniform(0, 2 * math.pi)), 900.0, 5.0, 180, 480)
                fixes = trace(home, plan, self.rng, t0, 15.0, 121)
                ctx.expect_alert(
                    self.name,
                    "zone_exit",
                    subject,
                    device_id=bracelet.device_id,
                    window_ms=_window(fixes, wrong),
                    cleared=True,
                    why="rode 900 m from home for 8 minutes, then came back",
                )
            else:
                fixes = trace(home, compliant_plan(self.rng, 300.0), self.rng, t0, 15.0, 121)
                _never_out(fixes, wrong)
                ctx.expect_alert(
                    self.name,
                    "zone_exit",
                    subject,
                    "absent",
                    device_id=bracelet.device_id,
                    why="walks to shops within 300 m of home",
                )
            self.fixes.append((bracelet, fixes))

    def play(self) -> Play:
        for bracelet, fixes in self.fixes:
            self.add_fixes(bracelet, fixes, batt=77)
            bracelet.start()
        yield self.ctx.acked(*(b for b, _ in self.fixes))


class ExclusionZone(Scenario):
    name = "exclusion-zone"
    code = "EZ"
    summary = "walks into a 240 m square exclusion zone 700 m from home and out (zone_enter)"

    def prepare(self) -> None:
        ctx = self.ctx
        home = self.home()
        bearing = float(self.rng.uniform(0, 2 * math.pi))
        centre = polar(700.0, bearing)
        half = 120.0
        corners = [
            destination(home, centre[0] + dx, centre[1] + dy)
            for dx, dy in ((-half, -half), (half, -half), (half, half), (-half, half))
        ]
        ring = [[round(c.lon, 7), round(c.lat, 7)] for c in [*corners, corners[0]]]
        self.subject = ctx.subject(self.name, "EZ1")
        since = ctx.t(-3 * 3600)
        zone = ctx.api.create_zone(
            self.subject,
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "kind": "exclusion",
                    "name": "victim's workplace",
                    "valid_from": iso_ms(since),
                },
            },
        )
        zone_id = str(zone["id"])
        self.bracelet = ctx.bracelet(self.name, "EZ1", self.subject, since, batch_size=10)
        plan = legs(
            ((0.0, 0.0), 120.0),
            (centre, 700.0 / 1.4),
            (centre, 300.0),
            ((0.0, 0.0), 700.0 / 1.4),
            ((0.0, 0.0), 3600.0),
        )
        self.fixes = trace(home, plan, self.rng, ctx.t(-45 * 60), 15.0, 121)

        def inside_m(f: FixSpec) -> float:
            east, north = to_local(home, f.point)
            x, y = abs(east - centre[0]), abs(north - centre[1])
            if x <= half and y <= half:
                return half - max(x, y)
            return -math.hypot(max(0.0, x - half), max(0.0, y - half))

        ctx.expect_alert(
            self.name,
            "zone_enter",
            self.subject,
            device_id=self.bracelet.device_id,
            zone_id=zone_id,
            window_ms=_window(self.fixes, inside_m),
            cleared=True,
            why="spent 5 minutes inside the exclusion zone",
        )

    def play(self) -> Play:
        self.add_fixes(self.bracelet, self.fixes, batt=64)
        self.bracelet.start()
        yield self.ctx.acked(self.bracelet)


def _last_local(anchor_ms: int, hh: int, mm: int, span_ms: int) -> int:
    """Epoch ms of the latest local hh:mm (in the subjects' time zone) whose span of
    `span_ms` ends at least 5 minutes before the anchor."""
    tz = ZoneInfo(TIMEZONE)
    day: date = datetime.fromtimestamp(anchor_ms / 1000, tz).date()
    while True:
        start = datetime.combine(day, clock_time(hh, mm), tz)
        start_ms = round(start.timestamp() * 1000)
        if start_ms + span_ms <= anchor_ms - 5 * MINUTE_MS:
            return start_ms
        day -= timedelta(days=1)


class Curfew(Scenario):
    name = "curfew"
    code = "CF"
    summary = (
        "a home zone with a 21:00-07:00 curfew: out 400 m at 23:00 local (curfew); "
        "the same walk at 14:00 (none)"
    )

    def prepare(self) -> None:
        ctx = self.ctx
        home = self.home()
        self.subject = ctx.subject(self.name, "CF1")
        since = ctx.t(-3 * 86400)
        zone = ctx.api.create_zone(
            self.subject,
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [home.lon, home.lat]},
                "properties": {
                    "kind": "home",
                    "radius_m": 150,
                    "name": "curfew address",
                    "valid_from": iso_ms(since),
                    "schedule": {
                        "weekly": [
                            {
                                "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                "from": "21:00",
                                "to": "07:00",
                            }
                        ]
                    },
                },
            },
        )
        zone_id = str(zone["id"])
        self.bracelet = ctx.bracelet(self.name, "CF1", self.subject, since, batch_size=25)
        span = 70 * MINUTE_MS  # 20 minutes home, out, back: 141 fixes 30 s apart
        night = _last_local(ctx.anchor_ms, 22, 40, span)
        day = _last_local(ctx.anchor_ms, 13, 40, span)
        bearing = float(self.rng.uniform(0, 2 * math.pi))
        walk = legs(
            ((0.0, 0.0), 1200.0),
            (polar(400.0, bearing), 290.0),
            (polar(420.0, bearing + 0.1), 1500.0),
            ((0.0, 0.0), 290.0),
            ((0.0, 0.0), 3600.0),
        )
        self.outings = sorted(
            [
                ("night", trace(home, walk, self.rng, night, 30.0, 141)),
                ("day", trace(home, walk, self.rng, day, 30.0, 141)),
            ],
            key=lambda o: o[1][0].t_ms,
        )
        wrong = outside_circle(home, 150.0)
        for when, fixes in self.outings:
            if when == "night":
                ctx.expect_alert(
                    self.name,
                    "curfew",
                    self.subject,
                    device_id=self.bracelet.device_id,
                    zone_id=zone_id,
                    window_ms=_window(fixes, wrong),
                    cleared=True,
                    why="400 m from home at 23:00 local, curfew 21:00-07:00",
                )
            else:
                ctx.expect_alert(
                    self.name,
                    "curfew",
                    self.subject,
                    "absent",
                    window_ms=(fixes[0].t_ms, fixes[-1].t_ms + 1),
                    why="the same walk at 14:00 local, outside the curfew hours",
                )

    def play(self) -> Play:
        for _, fixes in self.outings:
            self.add_fixes(self.bracelet, fixes, batt=58)
        self.bracelet.start()
        yield self.ctx.acked(self.bracelet)


class Tamper(Scenario):
    name = "tamper"
    code = "TP"
    summary = "the strap is opened at home and closed 8 minutes later (tamper, cleared)"

    def prepare(self) -> None:
        ctx = self.ctx
        self.home_at = self.home()
        self.subject = ctx.subject(self.name, "TP1")
        since = ctx.t(-2 * 3600)
        ctx.yellow(self.subject, self.home_at, since)
        self.bracelet = ctx.bracelet(self.name, "TP1", self.subject, since, batch_size=20)
        self.t_open, self.t_closed = ctx.t(-25 * 60), ctx.t(-17 * 60)
        plan = legs(((0.0, 0.0), 3600.0))
        self.fixes = trace(self.home_at, plan, self.rng, ctx.t(-35 * 60), 30.0, 61)
        ctx.expect_alert(
            self.name,
            "tamper",
            self.subject,
            device_id=self.bracelet.device_id,
            window_ms=_around(self.t_open),
            cleared=True,
            why="strap_open, then strap_closed 8 minutes later",
        )
        ctx.expect_alert(self.name, "zone_exit", self.subject, "absent", why="stayed home")

    def play(self) -> Play:
        events = [(self.t_open, "strap_open"), (self.t_closed, "strap_closed")]
        _interleave(self, self.bracelet, self.fixes, events, batt=lambda t: 71)
        self.bracelet.start()
        yield self.ctx.acked(self.bracelet)


def _interleave(
    scenario: Scenario,
    bracelet: Bracelet,
    fixes: list[FixSpec],
    events: list[tuple[int, str]],
    batt: Callable[[int], int] | None = None,
) -> None:
    """Record fixes and events in time order (as a device makes them)."""
    queue = sorted(events)
    for f in fixes:
        while queue and queue[0][0] <= f.t_ms:
            t, kind = queue.pop(0)
            scenario.add_event(bracelet, t, kind)
        bracelet.add_fix(
            f.t_ms, f.lat, f.lon, f.acc, spd=f.spd, batt=batt(f.t_ms) if batt else None
        )
        scenario.records += 1
    for t, kind in queue:
        scenario.add_event(bracelet, t, kind)


class Battery(Scenario):
    name = "battery"
    code = "BA"
    summary = (
        "the battery drains from 30 % to 3 % (battery_low, battery_critical), then "
        "charges (battery, cleared)"
    )

    def prepare(self) -> None:
        ctx = self.ctx
        home = self.home()
        self.subject = ctx.subject(self.name, "BA1")
        since = ctx.t(-3 * 3600)
        ctx.yellow(self.subject, home, since)
        self.bracelet = ctx.bracelet(self.name, "BA1", self.subject, since, batch_size=30)
        self.t0 = ctx.t(-110 * 60)
        self.fixes = trace(home, compliant_plan(self.rng, 250.0), self.rng, self.t0, 60.0, 106)
        # 0.3 % a minute down to 3 % at minute 90, then charging at 1 % a minute.
        self.t_low = self.t0 + 50 * MINUTE_MS
        self.t_critical = self.t0 + 84 * MINUTE_MS
        self.t_charger = self.t0 + 90 * MINUTE_MS + 30_000
        self.t_unplug = self.t0 + 104 * MINUTE_MS + 30_000
        ctx.expect_alert(
            self.name,
            "battery",
            self.subject,
            device_id=self.bracelet.device_id,
            # From the first fix at 10 % (a rule on the fixes' batt may open it there)
            # to well after the battery_critical event.
            window_ms=(self.t0 + 60 * MINUTE_MS, self.t_critical + 15 * MINUTE_MS),
            cleared=True,
            why="battery_critical at 5 %, charger_on 6 minutes later",
        )
        ctx.expect_alert(
            self.name,
            "battery",
            self.subject,
            "absent",
            cleared=False,
            why="charging clears the battery alert",
        )

    def level(self, t_ms: int) -> int:
        minute = (t_ms - self.t0) / MINUTE_MS
        if t_ms < self.t_charger:
            return max(1, round(30 - 0.3 * minute))
        return min(100, 3 + round((t_ms - self.t_charger) / MINUTE_MS))

    def play(self) -> Play:
        events = [
            (self.t_low, "battery_low"),
            (self.t_critical, "battery_critical"),
            (self.t_charger, "charger_on"),
            (self.t_unplug, "charger_off"),
        ]
        _interleave(self, self.bracelet, self.fixes, events, batt=self.level)
        self.bracelet.start()
        yield self.ctx.acked(self.bracelet)


class Duplicates(Scenario):
    name = "duplicates"
    code = "DU"
    summary = (
        "three uploads of 20 fixes (a trip outside the radius in the second), each "
        "published three times in all: every fix stored once, one zone_exit"
    )

    def prepare(self) -> None:
        ctx = self.ctx
        home = self.home()
        self.subject = ctx.subject(self.name, "DU1")
        since = ctx.t(-3 * 3600)
        ctx.yellow(self.subject, home, since)
        self.bracelet = ctx.bracelet(self.name, "DU1", self.subject, since, batch_size=20)
        bearing = float(self.rng.uniform(0, 2 * math.pi))
        far = polar(800.0, bearing)
        plan = legs(
            ((0.0, 0.0), 290.0), (far, 40.0), (far, 230.0), ((0.0, 0.0), 40.0), ((0.0, 0.0), 3600.0)
        )
        self.fixes = trace(home, plan, self.rng, ctx.t(-30 * 60), 15.0, 60)
        ctx.expect_alert(
            self.name,
            "zone_exit",
            self.subject,
            device_id=self.bracelet.device_id,
            window_ms=_window(self.fixes, outside_circle(home, HOME_RADIUS_M)),
            count=(1, 1),
            why="one trip outside: the same uploads again must not raise it twice",
        )

    def play(self) -> Play:
        sent: list[bytes] = []
        self.bracelet.on_upload = sent.append
        self.add_fixes(self.bracelet, self.fixes, batt=90)
        self.bracelet.start()
        yield self.ctx.acked(self.bracelet)
        self.bracelet.on_upload = None
        uploads = list(dict.fromkeys(sent))  # resends are the same bytes
        again = Republisher(self.bracelet, [*uploads, *uploads])
        yield Wait(again.done, f"{self.bracelet.device_id}: {len(uploads)} uploads twice more")
        acks = self.bracelet.acks_received
        yield Wait(
            lambda: self.bracelet.acks_received > acks or again.acked_after(),
            f"{self.bracelet.device_id}: an ack after the duplicates",
        )


class Republisher:
    """Publishes raw uploads one after the other until the broker has each (PUBACK),
    publishing again what a lost connection took with it."""

    def __init__(self, bracelet: Bracelet, payloads: list[bytes], signature: str | None = None):
        self.bracelet = bracelet
        self.todo = list(payloads)
        self.signature = signature
        self.mid: int | None = None
        self.acks_at_last = bracelet.acks_received
        self.count = 0

    def done(self) -> bool:
        b = self.bracelet
        if self.mid is not None:
            if not b.raw_done(self.mid):
                return False
            self.mid = None
            if b.connected:  # PUBACKed, not lost with the connection
                self.todo.pop(0)
                self.count += 1
                self.acks_at_last = b.acks_received
        if not self.todo:
            return True
        if b.connected:
            self.mid = b.publish_raw_nowait(self.todo[0], signature=self.signature)
        return False

    def acked_after(self) -> bool:
        return self.bracelet.acks_received > self.acks_at_last


class OfflineBurst(Scenario):
    name = "offline-burst"
    code = "OB"
    summary = (
        "3 hours without a connection (a trip outside the radius among them), then one "
        "upload of 182 records: zone_exit with its fix time, received hours later"
    )

    def prepare(self) -> None:
        ctx = self.ctx
        home = self.home()
        self.subject = ctx.subject(self.name, "OB1")
        since = ctx.t(-8 * 3600)
        ctx.yellow(self.subject, home, since)
        self.bracelet = ctx.bracelet(self.name, "OB1", self.subject, since, batch_size=500)
        self.t_boot = ctx.t(-5 * 3600 - 30)
        plan = _excursion(float(self.rng.uniform(0, 2 * math.pi)), 1200.0, 4.0, 3600.0, 1800.0)
        self.fixes = trace(home, plan, self.rng, ctx.t(-5 * 3600), 60.0, 181)
        ctx.expect_alert(
            self.name,
            "zone_exit",
            self.subject,
            device_id=self.bracelet.device_id,
            window_ms=_window(self.fixes, outside_circle(home, HOME_RADIUS_M), after=1),
            delay_s=(3600.0, None),
            cleared=True,
            why="left the radius 4 hours ago; uploaded in one burst now",
        )

    def play(self) -> Play:
        self.add_event(self.bracelet, self.t_boot, "boot")
        self.add_fixes(self.bracelet, self.fixes, batt=66)
        self.bracelet.start()
        yield self.ctx.acked(self.bracelet)


class ClockSkew(Scenario):
    name = "clock-skew"
    code = "CS"
    summary = (
        "two devices whose clocks are 7 minutes ahead and 5 minutes behind leave the "
        "radius: zone_exit at the devices' own (skewed) fix times"
    )

    SKEWS_S = (420, -300)

    def prepare(self) -> None:
        ctx = self.ctx
        since = ctx.t(-3 * 3600)
        self.devices: list[tuple[Bracelet, list[FixSpec]]] = []
        for n, skew in enumerate(self.SKEWS_S):
            code = f"CS{n + 1}"
            home = self.home(n)
            subject = ctx.subject(self.name, code)
            ctx.yellow(subject, home, since)
            bracelet = ctx.bracelet(self.name, code, subject, since, batch_size=10)
            plan = _excursion(float(self.rng.uniform(0, 2 * math.pi)), 900.0, 5.0, 120, 420)
            # The device stamps the true time plus its skew.
            fixes = trace(home, plan, self.rng, ctx.t(-30 * 60 + skew), 15.0, 101)
            ctx.expect_alert(
                self.name,
                "zone_exit",
                subject,
                device_id=bracelet.device_id,
                window_ms=_window(fixes, outside_circle(home, HOME_RADIUS_M)),
                why=f"device clock {skew / 60:+.0f} min: the alert carries the device's time",
            )
            if skew > 120:
                ctx.expect_alert(
                    self.name,
                    "spoofing",
                    subject,
                    "may",
                    device_id=bracelet.device_id,
                    why="fix times ahead of their arrival",
                )
            self.devices.append((bracelet, fixes))

    def play(self) -> Play:
        for bracelet, fixes in self.devices:
            self.add_fixes(bracelet, fixes, batt=80)
            bracelet.start()
        yield self.ctx.acked(*(b for b, _ in self.devices))


class SpoofedJumps(Scenario):
    name = "spoofed-jumps"
    code = "SJ"
    summary = (
        "every tenth fix teleports 250 km away and back: stored, no zone_exit "
        "(a lone fix never confirms), perhaps spoofing"
    )

    def prepare(self) -> None:
        ctx = self.ctx
        home = self.home()
        self.subject = ctx.subject(self.name, "SJ1")
        since = ctx.t(-3 * 3600)
        ctx.yellow(self.subject, home, since)
        self.bracelet = ctx.bracelet(self.name, "SJ1", self.subject, since, batch_size=20)
        fixes = trace(home, compliant_plan(self.rng, 200.0), self.rng, ctx.t(-30 * 60), 15.0, 81)
        self.jumps = 0
        for i, f in enumerate(fixes):
            if i % 10 == 5:
                far = destination(home, *polar(250_000.0, float(self.rng.uniform(0, 2 * math.pi))))
                fixes[i] = FixSpec(f.t_ms, round(far.lat, 7), round(far.lon, 7), 8.0, 1.0, 0, 0)
                self.jumps += 1
        self.fixes = fixes
        ctx.expect_alert(
            self.name,
            "zone_exit",
            self.subject,
            "absent",
            why=f"{self.jumps} lone fixes 250 km away: never 3 in a row, never 120 s",
        )
        ctx.expect_alert(
            self.name,
            "spoofing",
            self.subject,
            "may",
            device_id=self.bracelet.device_id,
            why="impossible speeds into and out of each jump",
        )

    def play(self) -> Play:
        self.add_fixes(self.bracelet, self.fixes, batt=88)
        self.bracelet.start()
        yield self.ctx.acked(self.bracelet)


class Silent(Scenario):
    name = "silent"
    code = "SI"
    summary = (
        "two devices go silent without a goodbye (the will says offline): one at home "
        "(no alert), one after leaving the radius (zone_exit stays uncleared)"
    )

    def prepare(self) -> None:
        ctx = self.ctx
        since = ctx.t(-3 * 3600)
        self.devices: list[tuple[Bracelet, list[FixSpec]]] = []
        for n, code in enumerate(("SI1", "SI2")):
            home = self.home(n)
            subject = ctx.subject(self.name, code)
            ctx.yellow(subject, home, since)
            bracelet = ctx.bracelet(self.name, code, subject, since, batch_size=20)
            wrong = outside_circle(home, HOME_RADIUS_M)
            if n == 0:
                fixes = trace(home, legs(((0.0, 0.0), 60.0)), self.rng, ctx.t(-10 * 60), 15.0, 33)
                _never_out(fixes, wrong)
                ctx.expect_alert(
                    self.name, "zone_exit", subject, "absent", why="silent at home: not a violation"
                )
            else:
                away = legs(
                    ((0.0, 0.0), 120.0),
                    (polar(900.0, float(self.rng.uniform(0, 2 * math.pi))), 180.0),
                )
                fixes = trace(home, away, self.rng, ctx.t(-15 * 60), 15.0, 53)
                ctx.expect_alert(
                    self.name,
                    "zone_exit",
                    subject,
                    device_id=bracelet.device_id,
                    window_ms=_window(fixes, wrong),
                    cleared=False,
                    why="silent while outside: silence is not compliance",
                )
            ctx.expect_device(self.name, bracelet.device_id, online=False, why="its will")
            for kind in ("comms_loss", "location_loss"):
                ctx.expect_alert(self.name, kind, subject, "may", device_id=bracelet.device_id)
            self.devices.append((bracelet, fixes))

    def play(self) -> Play:
        for bracelet, fixes in self.devices:
            self.add_fixes(bracelet, fixes, batt=45)
            bracelet.start()
        yield self.ctx.acked(*(b for b, _ in self.devices))
        for bracelet, _ in self.devices:
            yield from self._vanish(bracelet)

    def _vanish(self, bracelet: Bracelet) -> Play:
        ctx = self.ctx
        device = bracelet
        while True:
            device.vanish()
            ctx.retire(device)
            seen = _Seen(ctx.clock, _AGAIN_S)
            yield Wait(
                ctx.every(0.5, _offline(ctx.reader, device.device_id, seen)),
                f"{device.device_id} offline in the API",
            )
            if seen.yes:
                return
            # The will was lost (a broker crash before it was delivered): again.
            device = ctx.reopen(device)
            device.start()
            yield Wait(_connected(device), f"{device.device_id} back to vanish again")


def _offline(api: OperatorClient, device_id: str, seen: _Seen) -> Callable[[], bool]:
    return lambda: seen(api.device(device_id).get("online") is False)


def _connected(device: Bracelet) -> Callable[[], bool]:
    return lambda: device.connected


class _Seen:
    """A wait that ends when its condition is seen, or after `patience_s` without it."""

    def __init__(self, clock: Callable[[], float], patience_s: float) -> None:
        self._clock = clock
        self._until = clock() + patience_s
        self.yes = False

    def __call__(self, condition: bool) -> bool:
        self.yes = condition
        return condition or self._clock() >= self._until


class Jamming(Scenario):
    name = "jamming"
    code = "JM"
    summary = "jamming suspected, then 10 minutes of no_fix events, then fixes again (jamming)"

    def prepare(self) -> None:
        ctx = self.ctx
        home = self.home()
        self.subject = ctx.subject(self.name, "JM1")
        since = ctx.t(-3 * 3600)
        ctx.yellow(self.subject, home, since)
        self.bracelet = ctx.bracelet(self.name, "JM1", self.subject, since, batch_size=15)
        self.t_jam = ctx.t(-30 * 60)
        before = trace(home, legs(((0.0, 0.0), 60.0)), self.rng, ctx.t(-40 * 60), 30.0, 20)
        after = trace(home, legs(((0.0, 0.0), 60.0)), self.rng, ctx.t(-19 * 60), 30.0, 19)
        self.fixes = before + after
        self.no_fix = [self.t_jam + (k + 1) * MINUTE_MS for k in range(10)]
        ctx.expect_alert(
            self.name,
            "jamming",
            self.subject,
            device_id=self.bracelet.device_id,
            window_ms=_around(self.t_jam),
            why="a jamming event",
        )
        ctx.expect_alert(self.name, "zone_exit", self.subject, "absent", why="stayed home")
        ctx.expect_alert(
            self.name, "location_loss", self.subject, "may", why="10 minutes of no_fix"
        )

    def play(self) -> Play:
        events = [(self.t_jam, "jamming"), *((t, "no_fix") for t in self.no_fix)]
        _interleave(self, self.bracelet, self.fixes, events, batt=lambda t: 52)
        self.bracelet.start()
        yield self.ctx.acked(self.bracelet)


class OwnTracksPhone(Scenario):
    name = "owntracks"
    code = "OT"
    summary = (
        "an enrolled OwnTracks phone: 21 retained locations (5 of them sent twice) and "
        "one buffered, a trip outside the radius (zone_exit), risky then restored "
        "settings (phone_status, cleared)"
    )

    def prepare(self) -> None:
        ctx = self.ctx
        home = self.home()
        self.subject = ctx.subject(self.name, "OT1")
        since = ctx.t(-2 * 3600)
        ctx.yellow(self.subject, home, since)
        self.phone = ctx.phone(self.name, "OT1", self.subject, since)
        plan = _excursion(float(self.rng.uniform(0, 2 * math.pi)), 1000.0, 5.0, 240.0, 600.0)
        fixes = trace(home, plan, self.rng, ctx.t(-30 * 60), 60.0, 21, acc_m=(5.0, 12.0))
        # OwnTracks reports whole metres and seconds: judge what it will send.
        self.fixes = [
            FixSpec(
                (f.t_ms // 1000) * 1000,
                round(f.lat, 6),
                round(f.lon, 6),
                float(round(f.acc)),
                f.spd,
                f.true_east,
                f.true_north,
            )
            for f in fixes
        ]
        self.docs = [
            location(f.t_ms // 1000, f.lat, f.lon, f.acc, batt=74 - i // 4, vel_kmh=f.spd * 3.6)
            for i, f in enumerate(self.fixes)
        ]
        buffered_t = ctx.t(-9 * 60) // 1000
        here = self.fixes[-1]
        self.buffered = location(
            buffered_t, here.lat, here.lon, 9.0, batt=69, created_at=ctx.anchor_ms // 1000
        )
        self.total = len(self.docs) + 1
        ctx.expect_fixes(
            self.name,
            self.subject,
            self.phone.device_id,
            self.total,
            distinct_t=True,
            why="locations sent again (retained, resubscribed) are stored once",
        )
        ctx.expect_alert(
            self.name,
            "zone_exit",
            self.subject,
            device_id=self.phone.device_id,
            window_ms=_window(self.fixes, outside_circle(home, HOME_RADIUS_M), after=1),
            why="the phone rode 1 km from home",
        )
        ctx.expect_alert(
            self.name,
            "phone_status",
            self.subject,
            device_id=self.phone.device_id,
            cleared=True,
            why="power saving and battery optimisation on, then off again",
        )

    def _fixes_seen(self) -> int:
        return sum(
            1
            for f in self.ctx.reader.all_fixes(self.subject, REASON)
            if f.get("properties", {}).get("device_id") == self.phone.device_id
        )

    def _phone_alerts(self) -> list[dict[str, Any]]:
        return [
            a
            for a in self.ctx.reader.all_alerts(REASON, self.subject)
            if a.get("kind") == "phone_status"
        ]

    def play(self) -> Play:
        phone = self.phone
        for doc in self.docs:
            phone.send_location(doc)
        for doc in self.docs[3:8]:
            phone.send_location(doc)  # the app again after a resubscription
        phone.send_location(self.buffered)
        self.records = self.total
        phone.start()
        yield Wait(lambda: phone.pending == 0, f"{phone.device_id} messages at the broker")

        def all_stored() -> bool:
            return self._fixes_seen() >= self.total

        yield from self._until_seen(all_stored, self._send_all, "all locations stored")

        risky = status(power_saving=True, battery_optimised=True)
        phone.send_status(risky)

        def warned() -> bool:
            return any(not _cleared(a) for a in self._phone_alerts())

        yield from self._until_seen(warned, lambda: phone.send_status(risky), "phone_status open")
        phone.send_status(status())

        def cleared() -> bool:
            alerts = self._phone_alerts()
            return bool(alerts) and all(_cleared(a) for a in alerts)

        yield from self._until_seen(
            cleared, lambda: phone.send_status(status()), "phone_status cleared"
        )

    def _send_all(self) -> None:
        for doc in [*self.docs, self.buffered]:
            self.phone.send_location(doc)

    def _until_seen(self, seen: Callable[[], bool], again: Callable[[], None], what: str) -> Play:
        """OwnTracks has no acknowledgement: look through the API, and send again what
        a crash may have lost after the broker took it."""
        while True:
            waiting = _Seen(self.ctx.clock, _AGAIN_S)
            check = self.ctx.every(0.5, _watch(seen, waiting))
            yield Wait(check, f"{self.phone.device_id}: {what}")
            if waiting.yes:
                return
            again()


def _watch(seen: Callable[[], bool], waiting: _Seen) -> Callable[[], bool]:
    return lambda: waiting(seen())


def _cleared(alert: dict[str, Any]) -> bool:
    return bool((alert.get("detail") or {}).get("cleared_at"))


class ForgedUpload(Scenario):
    name = "forged-upload"
    code = "FG"
    summary = "an upload with a forged signature: refused, not stored, integrity alert"

    FORGED_SEQ = 1_000_000

    def prepare(self) -> None:
        ctx = self.ctx
        home = self.home()
        self.subject = ctx.subject(self.name, "FG1")
        since = ctx.t(-2 * 3600)
        ctx.yellow(self.subject, home, since)
        self.bracelet = ctx.bracelet(self.name, "FG1", self.subject, since, batch_size=10)
        self.fixes = trace(home, legs(((0.0, 0.0), 60.0)), self.rng, ctx.t(-6 * 60), 30.0, 10)
        far = destination(home, 3000.0, 0.0)
        self.forged = (
            f'{{"fixes":[{{"seq":{self.FORGED_SEQ},"t":{ctx.t(-60)},"lat":{far.lat:.7f},'
            f'"lon":{far.lon:.7f},"acc":5.0,"src":"gnss"}}],"events":[]}}'
        ).encode()
        ctx.expect_alert(
            self.name,
            "integrity",
            self.subject,
            device_id=self.bracelet.device_id,
            why="an upload signed with the wrong key",
        )
        ctx.expect_alert(
            self.name, "zone_exit", self.subject, "absent", why="the forged fix is not judged"
        )

    def _integrity(self) -> bool:
        return any(
            a.get("kind") == "integrity" for a in self.ctx.reader.all_alerts(REASON, self.subject)
        )

    def play(self) -> Play:
        self.add_fixes(self.bracelet, self.fixes, batt=93)
        self.bracelet.start()
        yield self.ctx.acked(self.bracelet)
        wrong_key = b64url(bytes(32))
        while True:
            forger = Republisher(self.bracelet, [self.forged], signature=wrong_key)
            yield Wait(forger.done, f"{self.bracelet.device_id}: forged upload at the broker")
            waiting = _Seen(self.ctx.clock, _AGAIN_S)
            check = self.ctx.every(0.5, _watch(self._integrity, waiting))
            yield Wait(check, f"{self.bracelet.device_id}: integrity alert")
            if waiting.yes:
                return


SCENARIOS: dict[str, type[Scenario]] = {
    s.name: s
    for s in (
        LeaveRadius,
        ExclusionZone,
        Curfew,
        Tamper,
        Battery,
        Duplicates,
        OfflineBurst,
        ClockSkew,
        SpoofedJumps,
        Silent,
        Jamming,
        OwnTracksPhone,
        ForgedUpload,
    )
}
