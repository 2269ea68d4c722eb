"""Many bracelets on one thread: one selector over all their sockets, fixes made on
schedule from each wearer's track, progress reported every few seconds.

One thread and no paho network threads keeps a fast fleet clear of the interpreter-lock
contention that `loop_start()` brings (see the field notes); each bracelet caps its own
uploads in flight.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from device_sim.device import Bracelet, Reading
from device_sim.roster import HOME_RADIUS_M, TIMEZONE, Member
from device_sim.tracks import Track

__all__ = ["Broker", "Fleet", "Progress", "Wearer"]

log = logging.getLogger(__name__)

# How often every bracelet's timers run even when its socket is quiet.
_TICK_S = 0.1


@dataclass(frozen=True, slots=True)
class Broker:
    host: str
    port: int = 1883
    tls: bool = False


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot for the progress line; counts are for this run."""

    elapsed_s: float
    devices: int
    connected: int
    made: int  # records created
    sent: int  # records published, resends included
    acked: int  # records newly acknowledged
    pending: int  # records waiting for an acknowledgement, earlier runs' included
    rate: float  # records created per second since the previous snapshot
    uploads: int = 0  # uploads published, resends included
    acks_received: int = 0  # ack messages received
    reconnects: int = 0  # connections made after each device's first

    def line(self) -> str:
        return (
            f"{self.elapsed_s:7.0f}s  connected {self.connected}/{self.devices}  "
            f"made {self.made}  sent {self.sent}  acked {self.acked}  "
            f"pending {self.pending}  {self.rate:.1f} rec/s"
        )


@dataclass(slots=True)
class Wearer:
    """A member of the roster on the move, with the bracelet they wear."""

    member: Member
    bracelet: Bracelet
    track: Track
    battery_start: int
    start: float = 0.0  # monotonic time of the first fix
    last_fix: float | None = None  # the scheduled (monotonic) time of the latest fix
    outside: bool = False  # beyond the home radius, by the wearer's true position
    made: int = 0
    acked_at_start: int = field(default=0)

    @property
    def next_fix(self) -> float:
        """Read from the bracelet's interval each time: `set_interval` applies at once."""
        if self.last_fix is None:
            return self.start
        return self.last_fix + self.bracelet.fix_interval_s


class Fleet:
    """Drives `wearers` until told to stop.

    `speedup` compresses the scenario: the tracks advance `speedup` scenario seconds per
    wall second and the fix intervals shrink by the same factor, while fix times stay
    real wall-clock times (the backend refuses none for being in the future).
    """

    def __init__(
        self,
        wearers: Sequence[Wearer],
        speedup: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        if speedup <= 0:
            raise ValueError(f"speedup must be positive, not {speedup}")
        self.wearers = list(wearers)
        self.speedup = speedup
        self._clock = clock
        self._wall_ms = wall_ms
        self._t0 = clock()

    @classmethod
    def build(
        cls,
        members: Sequence[Member],
        broker: Broker,
        state_dir: Path,
        seed: int,
        *,
        speedup: float = 1.0,
        fix_interval_s: float = 15.0,
        breaker_fix_interval_s: float = 5.0,
        batch_size: int = 500,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> Fleet:
        """Bracelets and tracks for the members, each device's journal under
        `state_dir/devices/{device_id}`."""
        wearers: list[Wearer] = []
        fleet = cls([], speedup=speedup, clock=clock, wall_ms=wall_ms)
        # Commuters start their day at the local time of day (the fix times are the wall
        # clock's): seconds since midnight in the subjects' time zone.
        local = datetime.fromtimestamp(wall_ms() / 1000, ZoneInfo(TIMEZONE))
        time_of_day = local.hour * 3600 + local.minute * 60 + local.second
        for m in members:
            track_seed = [seed, m.index]
            if m.scenario == "breaker":
                track = Track.breaker(m.home, track_seed, speedup=speedup)
                interval = breaker_fix_interval_s
            elif m.scenario == "commuter":
                track = Track.commuter(m.home, track_seed, speedup, time_of_day)
                interval = fix_interval_s
            else:
                track = Track.compliant(m.home, track_seed, speedup=speedup)
                interval = fix_interval_s
            bracelet = Bracelet(
                m.device_id,
                broker.host,
                broker.port,
                m.mqtt_username if m.enrolled else m.device_id,
                m.mqtt_password,
                signing_key=m.signing_key,
                state_dir=state_dir / "devices" / m.device_id,
                batch_size=batch_size,
                fix_interval_s=interval / speedup,
                tls=broker.tls,
                clock=clock,
                wall_ms=wall_ms,
            )
            battery = int(np.random.default_rng([seed, m.index, 7]).integers(60, 101))
            wearer = Wearer(m, bracelet, track, battery, start=fleet._t0)
            bracelet.locator = fleet._locator(wearer)
            wearers.append(wearer)
        fleet.wearers = wearers
        return fleet

    def _locator(self, wearer: Wearer) -> Callable[[int], Reading | None]:
        # `locate` wants the position now, whatever the fix schedule.
        def locate(t_ms: int) -> Reading | None:
            scenario_s = (self._clock() - self._t0) * self.speedup
            s = wearer.track.sample(scenario_s)
            return Reading(s.lat, s.lon, s.acc, s.src, s.spd, self._battery(wearer, scenario_s))

        return locate

    def _battery(self, wearer: Wearer, scenario_s: float) -> int:
        if wearer.member.scenario == "commuter":
            # Drains faster on the move, charges at night.
            return wearer.track.battery(scenario_s, wearer.battery_start)
        # About 1 % every 15 minutes: the demo never runs a bracelet flat.
        return max(5, wearer.battery_start - int(scenario_s / 900))

    # -- running -----------------------------------------------------------------

    def run(
        self,
        should_stop: Callable[[], bool],
        duration_s: float | None = None,
        report: Callable[[Progress], None] | None = None,
        notice: Callable[[str], None] | None = None,
        report_every_s: float = 5.0,
    ) -> Progress:
        """Connect everyone, make fixes on schedule, report, and close cleanly when
        `should_stop()` turns true or `duration_s` has passed. Returns the last figures."""
        self._t0 = self._clock()
        wall = self._wall_ms()
        log.info("starting %d devices, speedup %g", len(self.wearers), self.speedup)
        for w in self.wearers:
            w.acked_at_start = w.bracelet.acked_upto
            w.bracelet.add_event(wall, "boot")
            w.made += 1
            w.start = self._t0
            w.last_fix = None
            w.bracelet.start()
        selector = selectors.DefaultSelector()
        registered: dict[int, tuple[object, int]] = {}  # wearer index -> (socket, events)
        last_report = self._t0
        last_made = 0
        last_tick = 0.0
        try:
            while not should_stop():
                now = self._clock()
                if duration_s is not None and now - self._t0 >= duration_s:
                    break
                self.make_fixes(now, notice)
                if now - last_tick >= _TICK_S:
                    for w in self.wearers:
                        w.bracelet.tick()
                    last_tick = now
                self._sync_selector(selector, registered)
                next_fix = min((w.next_fix for w in self.wearers), default=now + _TICK_S)
                timeout = max(0.0, min(_TICK_S, next_fix - self._clock()))
                if registered:
                    ready = selector.select(timeout)
                else:
                    time.sleep(timeout)  # nobody connected: nothing to select on
                    ready = []
                for key, mask in ready:
                    wearer: Wearer = key.data
                    wearer.bracelet.service(
                        bool(mask & selectors.EVENT_READ), bool(mask & selectors.EVENT_WRITE)
                    )
                if report is not None and now - last_report >= report_every_s:
                    progress = self.progress(now, last_made, now - last_report)
                    report(progress)
                    last_made = progress.made
                    last_report = now
        finally:
            selector.close()
        final = self.progress(self._clock(), last_made, self._clock() - last_report)
        self.close()
        return final

    def close(self, drain_s: float = 3.0, goodbye_s: float = 2.0) -> None:
        """Give the last records up to `drain_s` to go out and be acknowledged, then
        say offline (all devices at once, up to `goodbye_s` for the PUBACKs) and
        disconnect every bracelet."""
        bracelets = [w.bracelet for w in self.wearers]
        deadline = self._clock() + drain_s
        while self._clock() < deadline and any(b.connected and b.pending for b in bracelets):
            self._pump_all(bracelets)
        for b in bracelets:
            b.begin_close()
        deadline = self._clock() + goodbye_s
        while self._clock() < deadline and not all(b.offline_said for b in bracelets):
            self._pump_all(bracelets)
        for b in bracelets:
            b.end_close()

    @staticmethod
    def _pump_all(bracelets: list[Bracelet], timeout_s: float = 0.02) -> None:
        with selectors.DefaultSelector() as selector:
            for b in bracelets:
                sock = b.socket()
                if sock is not None:
                    write = selectors.EVENT_WRITE if b.wants_write() else 0
                    selector.register(sock, selectors.EVENT_READ | write, b)
            if not selector.get_map():
                return
            for key, mask in selector.select(timeout_s):
                bracelet: Bracelet = key.data
                bracelet.service(
                    bool(mask & selectors.EVENT_READ), bool(mask & selectors.EVENT_WRITE)
                )

    def progress(self, now: float, made_before: int, period_s: float) -> Progress:
        made = sum(w.made for w in self.wearers)
        return Progress(
            elapsed_s=now - self._t0,
            devices=len(self.wearers),
            connected=sum(w.bracelet.connected for w in self.wearers),
            made=made,
            sent=sum(w.bracelet.records_sent for w in self.wearers),
            acked=sum(w.bracelet.acked_upto - w.acked_at_start for w in self.wearers),
            pending=sum(w.bracelet.pending for w in self.wearers),
            rate=(made - made_before) / period_s if period_s > 0 else 0.0,
            uploads=sum(w.bracelet.uploads_sent for w in self.wearers),
            acks_received=sum(w.bracelet.acks_received for w in self.wearers),
            reconnects=sum(max(0, w.bracelet.connects - 1) for w in self.wearers),
        )

    def make_fixes(self, now: float, notice: Callable[[str], None] | None = None) -> int:
        """Give every wearer whose fix is due (by the monotonic `now`) a fix stamped
        with the wall clock, and `notice` each crossing of the home radius. Returns how
        many fixes were made."""
        made = 0
        for w in self.wearers:
            due = w.next_fix
            if now < due:
                continue
            made += 1
            scenario_s = (now - self._t0) * self.speedup
            sample = w.track.sample(scenario_s)
            b = w.bracelet
            b.add_fix(
                self._wall_ms(),
                sample.lat,
                sample.lon,
                sample.acc,
                sample.src,
                spd=sample.spd,
                batt=self._battery(w, scenario_s),
            )
            w.made += 1
            # Fixes keep to their schedule; one that fell a whole interval behind skips
            # ahead rather than bursting to catch up.
            w.last_fix = due if now - due < b.fix_interval_s else now
            b.tick()
            # Commuters have no radius (a green status): nothing to notice.
            outside = sample.true_distance_m > HOME_RADIUS_M and w.member.scenario != "commuter"
            if outside != w.outside and notice is not None:
                verb = "left" if outside else "came back inside"
                notice(
                    f"{w.member.device_id} ({w.member.scenario}) {verb} its "
                    f"{HOME_RADIUS_M:.0f} m radius: {sample.true_distance_m:.0f} m from home"
                )
            w.outside = outside
        return made

    def _sync_selector(
        self, selector: selectors.BaseSelector, registered: dict[int, tuple[object, int]]
    ) -> None:
        """Register each connected socket for reading, and for writing while paho has
        bytes queued; forget sockets that closed (reconnects bring new ones)."""
        # Stale sockets go first: a new socket may reuse a closed one's descriptor.
        for i, (old_sock, _) in list(registered.items()):
            if self.wearers[i].bracelet.socket() is not old_sock:
                # A closed socket may be gone from the selector with its descriptor.
                with contextlib.suppress(KeyError, ValueError):
                    selector.unregister(old_sock)  # type: ignore[arg-type]
                del registered[i]
        for i, w in enumerate(self.wearers):
            sock = w.bracelet.socket()
            if sock is None:
                continue
            events = selectors.EVENT_READ | (
                selectors.EVENT_WRITE if w.bracelet.wants_write() else 0
            )
            old = registered.get(i)
            if old is None:
                selector.register(sock, events, w)
            elif old[1] != events:
                selector.modify(sock, events, w)
            else:
                continue
            registered[i] = (sock, events)
