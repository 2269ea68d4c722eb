"""What every scenario stands on: the context it enrols through, the steps it waits on,
and the movement and timing helpers that keep it seeded and reproducible.

A scenario enrols what it needs in `prepare()` (subjects, status orders, zones,
devices, each with times in the past so that past fixes are judged by them), then
`play()` is a generator: it makes its records and yields a `Wait` whenever it has to let
the network work (records acknowledged, the backend showing something); the runner drives
every device of every scenario on one thread and resumes each scenario when its wait is
over. Records are stamped relative to the run's anchor instant and drawn from the seed,
so the same seed, anchor and prefix give the same records, byte for byte.
"""

from __future__ import annotations

import math
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from device_sim.api import OperatorClient
from device_sim.device import Bracelet
from device_sim.expect import (
    AlertExpectation,
    Bounds,
    DeviceEntry,
    DeviceExpectation,
    ExpectFile,
    FixesExpectation,
    Must,
    Window,
    iso_ms,
)
from device_sim.fleet import Broker
from device_sim.phone import Phone
from device_sim.roster import CITIES, TIMEZONE
from device_sim.tracks import Leg, LonLat, Noise, Plan, destination, distance_m

__all__ = [
    "Context",
    "FixSpec",
    "Scenario",
    "Wait",
    "first_violation",
    "polar",
    "trace",
]

MINUTE_MS = 60_000
HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Wait:
    """A scenario waits until `check()` is true; `what` says what for, in reports."""

    check: Callable[[], bool]
    what: str


Play = Iterator[Wait]


@dataclass(frozen=True, slots=True)
class FixSpec:
    """A generated fix, and the truth behind it (where the wearer really was)."""

    t_ms: int
    lat: float
    lon: float
    acc: float
    spd: float
    true_east: float
    true_north: float

    @property
    def point(self) -> LonLat:
        return LonLat(self.lon, self.lat)


def polar(distance_m_: float, bearing_rad: float) -> tuple[float, float]:
    """(east, north) of a point `distance_m_` away on a bearing from north."""
    return distance_m_ * math.sin(bearing_rad), distance_m_ * math.cos(bearing_rad)


def legs(*steps: tuple[tuple[float, float], float]) -> Plan:
    """A plan from (point, seconds) steps, starting at home: each step moves in a
    straight line to its point over its seconds (a dwell when it stays put)."""
    out: list[Leg] = []
    here = (0.0, 0.0)
    for point, seconds in steps:
        out.append(Leg(here, point, seconds))
        here = point
    return Plan(tuple(out))


def trace(
    home: LonLat,
    plan: Plan,
    rng: np.random.Generator,
    t0_ms: int,
    interval_s: float,
    count: int,
    acc_m: tuple[float, float] = (5.0, 12.0),
) -> list[FixSpec]:
    """`count` fixes `interval_s` apart from `t0_ms`, following `plan` (which stays at its
    last point once done) with GNSS noise matching each fix's reported accuracy."""
    noise = Noise(rng)
    out: list[FixSpec] = []
    cycle = plan.cycle_s
    for i in range(count):
        elapsed = i * interval_s
        if elapsed >= cycle:
            last = plan.legs[-1]
            east, north, speed = last.end[0], last.end[1], 0.0
        else:
            east, north, speed = plan.position(elapsed)
        acc = round(float(rng.uniform(*acc_m)), 1)
        de, dn = noise.offset(elapsed, acc)
        p = destination(home, east + de, north + dn)
        out.append(
            FixSpec(
                t_ms=t0_ms + round(elapsed * 1000),
                lat=round(p.lat, 7),
                lon=round(p.lon, 7),
                acc=acc,
                spd=round(abs(speed + 0.15 * float(rng.standard_normal())), 2),
                true_east=east,
                true_north=north,
            )
        )
    return out


def first_violation(fixes: Sequence[FixSpec], wrong_m: Callable[[FixSpec], float]) -> int | None:
    """Index of the first fix the backend must judge a violation: its whole accuracy
    circle on the wrong side (`wrong_m`: metres on the wrong side, negative on the right
    one) and followed by at least two more such fixes (the default confirmation)."""
    for i in range(len(fixes) - 2):
        if all(wrong_m(f) > f.acc + 1.0 for f in fixes[i : i + 3]):
            return i
    return None


def outside_circle(centre: LonLat, radius_m: float) -> Callable[[FixSpec], float]:
    return lambda f: distance_m(centre, f.point) - radius_m


class Context:
    """Everything a scenario enrols and plays through, and the expectations it writes."""

    def __init__(
        self,
        api: OperatorClient,
        broker: Broker,
        state_dir: Path,
        seed: int,
        anchor_ms: int,
        prefix: str,
        expect: ExpectFile,
        *,
        resend_after_s: float = 10.0,
        upload_gap_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        # Reads while playing: no retrying inside them (the loop keeps the devices going
        # and asks again), and a short timeout.
        self.reader = api.with_retry(0.0, timeout_s=5.0)
        self.broker = broker
        self.state_dir = state_dir
        self.seed = seed
        self.anchor_ms = anchor_ms
        self.prefix = prefix
        self.expect = expect
        self.resend_after_s = resend_after_s
        self.upload_gap_s = upload_gap_s
        self.clock = clock
        self.bracelets: dict[str, Bracelet] = {}  # those being driven
        self.phones: dict[str, Phone] = {}
        self.built: list[Bracelet] = []  # every one, for the totals
        self._made: dict[str, dict[str, Any]] = {}  # how each bracelet was built

    # -- seeds and times -----------------------------------------------------------

    def rng(self, *keys: str | int) -> np.random.Generator:
        """A generator of its own for each key path, stable across Python runs."""
        words = [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
        return np.random.default_rng([self.seed, *words])

    def t(self, offset_s: float) -> int:
        """The anchor plus `offset_s` (negative: the past), epoch ms."""
        return self.anchor_ms + round(offset_s * 1000)

    def home(self, name: str, index: int) -> LonLat:
        """A home within 4 km of Almaty or Astana, from the seed and the names alone
        (a scenario run alone or among others gets the same homes)."""
        rng = self.rng(name, "home", index)
        city = CITIES["Almaty" if (zlib.crc32(name.encode()) + index) % 2 == 0 else "Astana"]
        r = 4000.0 * math.sqrt(float(rng.uniform()))
        bearing = float(rng.uniform(0, 2 * math.pi))
        p = destination(city, *polar(r, bearing))
        return LonLat(round(p.lon, 7), round(p.lat, 7))

    def device_id(self, code: str) -> str:
        return f"{self.prefix}-{code}"

    # -- enrolment -------------------------------------------------------------------

    def subject(self, scenario: str, code: str) -> str:
        answer = self.api.create_subject(
            f"Scenario {scenario} {code}", f"SIM-{self.prefix}-{code}", TIMEZONE
        )
        return str(answer["id"])

    def yellow(self, subject_id: str, home: LonLat, effective_ms: int) -> None:
        """The yellow preset: within 500 m of `home`, in force from `effective_ms`."""
        self.api.set_status(
            subject_id, "yellow", home=(home.lon, home.lat), effective_at=iso_ms(effective_ms)
        )

    def bracelet(
        self,
        scenario: str,
        code: str,
        subject_id: str,
        assigned_ms: int,
        *,
        batch_size: int = 50,
        signed: bool = True,
    ) -> Bracelet:
        device_id = self.device_id(code)
        enrolment = self.api.enrol_device(
            device_id, subject_id, "bracelet", signed, assigned_at=iso_ms(assigned_ms)
        )
        made = {
            "device_id": device_id,
            "host": self.broker.host,
            "port": self.broker.port,
            "username": enrolment.mqtt_username,
            "password": enrolment.mqtt_password,
            "signing_key": enrolment.signing_key,
            "state_dir": self.state_dir / "devices" / device_id,
            "batch_size": batch_size,
            "resend_after_s": self.resend_after_s,
            "tls": self.broker.tls,
        }
        self._made[device_id] = made
        bracelet = self._build(made)
        self.expect.devices.append(DeviceEntry(device_id, subject_id, "bracelet", scenario, True))
        return bracelet

    def _build(self, made: dict[str, Any]) -> Bracelet:
        b = Bracelet(
            made["device_id"],
            made["host"],
            made["port"],
            made["username"],
            made["password"],
            signing_key=made["signing_key"],
            state_dir=made["state_dir"],
            batch_size=made["batch_size"],
            resend_after_s=made["resend_after_s"],
            min_upload_gap_s=self.upload_gap_s,
            tls=made["tls"],
            clock=self.clock,
        )
        self.bracelets[b.device_id] = b
        self.built.append(b)
        return b

    def reopen(self, bracelet: Bracelet) -> Bracelet:
        """The same device again after `vanish()` (its journal reopened), not started."""
        return self._build(self._made[bracelet.device_id])

    def retire(self, bracelet: Bracelet) -> None:
        """Stop driving a device that vanished."""
        if self.bracelets.get(bracelet.device_id) is bracelet:
            del self.bracelets[bracelet.device_id]

    def phone(self, scenario: str, code: str, subject_id: str, assigned_ms: int) -> Phone:
        device_id = self.device_id(code)
        user = f"{self.prefix.lower()}-{code.lower()}"
        base = f"owntracks/{user}/phone"
        enrolment = self.api.enrol_device(
            device_id,
            subject_id,
            "owntracks",
            signed=False,
            assigned_at=iso_ms(assigned_ms),
            owntracks_topic=base,
        )
        phone = Phone(
            device_id,
            base,
            self.broker.host,
            self.broker.port,
            enrolment.mqtt_username,
            enrolment.mqtt_password,
            tls=self.broker.tls,
            clock=self.clock,
        )
        self.phones[device_id] = phone
        self.expect.devices.append(DeviceEntry(device_id, subject_id, "owntracks", scenario, False))
        return phone

    # -- expectations ----------------------------------------------------------------

    def expect_alert(
        self,
        scenario: str,
        kind: str,
        subject_id: str,
        must: Must = "exist",
        *,
        device_id: str | None = None,
        window_ms: tuple[int, int] | None = None,
        count: tuple[int | None, int | None] | None = None,
        cleared: bool | None = None,
        delay_s: tuple[float | None, float | None] | None = None,
        zone_id: str | None = None,
        why: str = "",
    ) -> None:
        self.expect.expectations.append(
            AlertExpectation(
                scenario=scenario,
                kind=kind,
                subject_id=subject_id,
                must=must,
                device_id=device_id,
                zone_id=zone_id,
                fix_time=Window(iso_ms(window_ms[0]), iso_ms(window_ms[1])) if window_ms else None,
                count=Bounds(*count) if count else None,
                cleared=cleared,
                delay_s=Bounds(*delay_s) if delay_s else None,
                why=why,
            )
        )

    def expect_fixes(
        self,
        scenario: str,
        subject_id: str,
        device_id: str,
        count: int,
        *,
        distinct_t: bool = False,
        why: str = "",
    ) -> None:
        self.expect.expectations.append(
            FixesExpectation(scenario, subject_id, device_id, Bounds(count, count), distinct_t, why)
        )

    def expect_device(
        self, scenario: str, device_id: str, online: bool | None, why: str = ""
    ) -> None:
        self.expect.expectations.append(DeviceExpectation(scenario, device_id, online, why))

    # -- waiting on the backend ------------------------------------------------------

    def every(self, seconds: float, check: Callable[[], bool]) -> Callable[[], bool]:
        """`check` (an API read, typically) at most once per `seconds`; false between."""
        last = [-math.inf]

        def throttled() -> bool:
            now = self.clock()
            if now - last[0] < seconds:
                return False
            last[0] = now
            return check()

        return throttled

    def acked_fraction(self) -> tuple[int, int]:
        """(records acknowledged, records made) over every bracelet of the run."""
        latest = {b.device_id: b for b in self.built}.values()
        return sum(b.acked_upto for b in latest), sum(b.last_seq for b in latest)

    def totals(self) -> dict[str, int]:
        """Traffic of the whole run: what the devices made, sent and had acknowledged."""
        return {
            "records": sum(b.last_seq for b in {b.device_id: b for b in self.built}.values()),
            "uploads": sum(b.uploads_sent for b in self.built),
            "sent": sum(b.records_sent for b in self.built),
            "acks": sum(b.acks_received for b in self.built),
            "connects": sum(b.connects for b in self.built),
            "devices": len({b.device_id for b in self.built}),
            "pending": sum(b.pending for b in self.bracelets.values()),
        }

    def acked(self, *bracelets: Bracelet) -> Wait:
        names = ", ".join(b.device_id for b in bracelets)
        return Wait(lambda: all(b.pending == 0 for b in bracelets), f"{names} acknowledged")


class Scenario(ABC):
    """One scenario: `prepare()` enrols, `play()` makes records and waits."""

    name: ClassVar[str] = ""
    code: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.rng = ctx.rng(self.name, "play")
        self.records = 0  # made, for the report

    @abstractmethod
    def prepare(self) -> None:
        """Enrol what the scenario needs (once, before any scenario plays)."""

    @abstractmethod
    def play(self) -> Play:
        """Make the records and yield what to wait for."""

    # helpers

    def home(self, n: int = 0) -> LonLat:
        return self.ctx.home(self.name, n)

    def add_fixes(
        self, bracelet: Bracelet, fixes: Sequence[FixSpec], batt: int | None = None
    ) -> None:
        for f in fixes:
            bracelet.add_fix(f.t_ms, f.lat, f.lon, f.acc, spd=f.spd, batt=batt)
            self.records += 1

    def add_event(self, bracelet: Bracelet, t_ms: int, kind: str, **detail: object) -> None:
        bracelet.add_event(t_ms, kind, detail or None)
        self.records += 1
