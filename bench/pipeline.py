"""The end-to-end benchmark: simulated devices → Mosquitto → monitor serve → TimescaleDB →
websocket operators, beside a bare baseline (a raw paho consumer that COPYs fixes and
judges nothing), measured in the same run so each feature's cost is a ratio.

    .venv/bin/python bench/pipeline.py [--devices 100000] [--seconds 60] [--rate 10000]
                                       [--clients 50] [--per-upload 10] [--fix-interval 10]
                                       [--violating 0.05] [--no-baseline] [--no-check]
                                       [--check-workers 8] [--check-sample K]
                                       [--profile FILE] [--warmup S] [--keep]

The issue's goal (10,000 fixes/s for 10 minutes, p99 fix-to-operator under 1 s, 100,000
enrolled subjects, nothing lost):

    .venv/bin/python bench/pipeline.py --devices 100000 --rate 10000 --seconds 600 \\
        --clients 50 --warmup 100

`--warmup 100` first offers 100 s of fixes with every device at home (unmeasured): the
service meets each of the 100,000 subjects once, as one that has been running has, and
the violators leave home when the measured run starts (at 30 m/s, so plausibility does
not take them for spoofed positions). Without it the run starts cold,
as right after a restart, when each subject's first upload costs its warm-up reads.

Enrolment: one template subject goes through the operator API (subject, yellow status
with its home, unsigned bracelet), then SQL clones it into every table the API wrote,
and the service is restarted so it loads the devices fresh. Each device makes a fix
every `--fix-interval` seconds and uploads `--per-upload` of them at once (the last
stamped at publish time, the others `--fix-interval` apart before it); devices are
driven round-robin at the offered `--rate`, so with 100,000 devices at 10,000 fixes/s
each uploads every 100 s. The `--violating` share of devices (spread evenly) reports
900 m east of home (outside the 500 m radius), the others at home.

Prints: every 30 s fixes published and acknowledged, the rate over those 30 s and the
service RSS; then fixes/s acknowledged (with the median and minimum 30-s rate), the
latency of every alert event each websocket client received: fix-to-operator (from the
`t` of the alert's detail.last_fix), upload-to-operator (from the publish time of the
upload that carried it) and from the service's received_at; database rows/s, CPU steal.
Then alerts by kind and a SQL count of every device's stored fixes, and, with --check,
what `device-sim check` says of journals written for every device (each acknowledged
fix stored exactly once) and of each violating subject's zone_exit alert. The check
reads each device and each subject's fixes through the operator API: about 16 minutes
for 100,000 subjects. No assertions: figures only. Loopback only; every loop is bounded
in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import multiprocessing.queues
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import psycopg
import websockets
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import stack  # noqa: E402
from device_sim.expect import AlertExpectation, ExpectFile  # noqa: E402
from geofences.geodesy import offset  # noqa: E402
from protocol.signature import decode_key, sign  # noqa: E402
from tests.client import Api  # noqa: E402
from tests.servers import Monitor, Mosquitto, NatsCluster, Postgres, wait_for  # noqa: E402

HOME = (71.4304, 51.1282)
OUT_M = 900.0  # violating devices report this far east of home (the radius is 500 m)
WALK_M_S = 30.0  # how fast a violator seen at home leaves (by car; plausibility allows 70)
RADIUS_M = 500.0  # a yellow status's default isolation radius, as enrolled
ASSIGNED_AT = "2026-01-01T00:00:00Z"
REPORT_EVERY_S = 30.0
# What the API writes for one subject with a status and a device (see enrol()): the
# clone copies exactly these tables; the audit log is left out on purpose.
CLONED = ("subjects", "zones", "subject_statuses", "devices")
NOT_CLONED = ("audit_log",)


def cpu() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return fields[7], sum(fields)


def schedstat(pid: int) -> tuple[int, int]:
    """Nanoseconds the process's main thread (the service's event loop) has run on a
    CPU, and waited runnable for one (the kernel's run queue): the second is what the
    other processes on these two cores cost it."""
    with contextlib.suppress(OSError, ValueError):
        ran, waited, _slices = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
        return int(ran), int(waited)
    return 0, 0


def busy_us(base_url: str | None) -> tuple[int, int] | None:
    """The service's batch loop time and garbage collectors' pauses so far, in µs (GET
    /metrics: monitor_batch_busy_us_total, monitor_gc_pause_us_total)."""
    if base_url is None:
        return None
    found: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError, httpx.HTTPError):
        for line in httpx.get(f"{base_url}/metrics", timeout=5).text.splitlines():
            name, _, value = line.partition(" ")
            if name in ("monitor_batch_busy_us_total", "monitor_gc_pause_us_total"):
                found[name] = int(value)
    if "monitor_batch_busy_us_total" not in found:
        return None
    return found["monitor_batch_busy_us_total"], found.get("monitor_gc_pause_us_total", 0)


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pct(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def device_ids(n: int) -> list[str]:
    return [f"BP-{i:06d}" for i in range(1, n + 1)]


def violating(index: int, share: float) -> bool:
    """Spread evenly over the round-robin order (device 0 first), so a short run that
    reaches only some of the devices still has its share of violators."""
    return math.ceil(index * share) < math.ceil((index + 1) * share)


class Reporter:
    """A line every REPORT_EVERY_S: fixes published and acknowledged, the acknowledged
    rate over the last period, the service's RSS. Keeps the rates of the periods of the
    offered run (the last one if it covers half a period at least), for the median and
    minimum at the end; periods while draining are printed, not kept."""

    def __init__(
        self,
        label: str,
        pid: int | None,
        published: int = 0,
        acked: int = 0,
        base_url: str | None = None,
    ) -> None:
        self.label = label
        self.pid = pid
        self.base_url = base_url
        self.sched = schedstat(pid) if pid is not None else (0, 0)
        self.busy = busy_us(base_url)
        # Per period: the batch loop's share of the time, the event loop's thread on a
        # CPU and waiting for one, and the garbage collector's pauses (%), for the medians.
        self.loop: list[tuple[float, float, float, float]] = []
        self.start = time.monotonic()
        self.last_t = self.start
        # The fleet's counts when this run began (after a warm-up): lines count from here.
        self.base_published = published
        self.last_acked = acked
        self.rates: list[float] = []
        self.offering = True

    def tick(self, published: int, acked: int, force: bool = False) -> None:
        now = time.monotonic()
        if now - self.last_t < REPORT_EVERY_S and not force:
            return
        if now - self.last_t < 1.0:
            return
        rate = (acked - self.last_acked) / (now - self.last_t)
        # A forced line at the end of the offered run counts if it covers half a period.
        if self.offering and now - self.last_t >= REPORT_EVERY_S / 2:
            self.rates.append(rate)
        rss = f", service RSS {rss_mb(self.pid):5.0f} MiB" if self.pid is not None else ""
        phase = "" if self.offering else " (draining)"
        loop = ""
        if self.pid is not None:
            span_ns = (now - self.last_t) * 1e9
            sched = schedstat(self.pid)
            ran = (sched[0] - self.sched[0]) / span_ns * 100
            waited = (sched[1] - self.sched[1]) / span_ns * 100
            self.sched = sched
            busy = busy_us(self.base_url)
            if busy is not None and self.busy is not None:
                share = (busy[0] - self.busy[0]) / span_ns * 100_000
                collect = (busy[1] - self.busy[1]) / span_ns * 100_000
                loop = (
                    f"; batches {share:3.0f} %, on CPU {ran:3.0f} %, waiting {waited:3.0f} %,"
                    f" collecting garbage {collect:4.1f} %"
                )
                if self.offering and now - self.last_t >= REPORT_EVERY_S / 2:
                    self.loop.append((share, ran, waited, collect))
            self.busy = busy
        print(
            f"  {self.label} t={now - self.start:5.0f} s"
            f"  published {published - self.base_published:>9,}"
            f"  acknowledged {acked - self.base_published:>9,}  last {now - self.last_t:3.0f} s:"
            f" {rate:8,.0f} fixes/s{rss}{loop}{phase}",
            flush=True,
        )
        self.last_t, self.last_acked = now, acked

    def summary(self) -> str:
        if not self.rates:
            return "no full 30-s period"
        return (
            f"{len(self.rates)} periods of {REPORT_EVERY_S:.0f} s while offering:"
            f" median {statistics.median(self.rates):,.0f}, min {min(self.rates):,.0f} fixes/s"
        )

    def loop_summary(self) -> str | None:
        """The service's event loop over the periods: medians and maxima (%)."""
        if not self.loop:
            return None
        share, ran, waited, collect = (sorted(v[k] for v in self.loop) for k in range(4))
        return (
            f"batches took {statistics.median(share):.0f} % of the time (max {share[-1]:.0f});"
            f" the event loop's thread ran {statistics.median(ran):.0f} % (max {ran[-1]:.0f})"
            f" and waited for a CPU {statistics.median(waited):.0f} % (max {waited[-1]:.0f});"
            f" garbage collections paused it {statistics.median(collect):.1f} %"
            f" (max {collect[-1]:.1f})"
        )


class Fleet:
    """Publishes uploads for many devices from one thread, round-robin, paced at the
    offered rate. Per device it keeps counters only (next seq, first and last fix time,
    acknowledged seq): memory is bounded by the number of devices, not of fixes."""

    def __init__(
        self,
        port: int,
        ids: list[str],
        per_upload: int,
        fix_interval_s: float,
        violating_share: float,
        out_m: float,
        signing_key: bytes | None = None,
    ) -> None:
        self.ids = ids
        # Signed uploads, as production fleets send them (the clones share one key).
        self.signing_key = signing_key
        self.per_upload = per_upload
        self.interval_ms = round(fix_interval_s * 1000)
        n = len(ids)
        self.bad = [violating(i, violating_share) for i in range(n)] if out_m else [False] * n
        self.out = offset(HOME[0], HOME[1], out_m, 0.0)
        self.out_m = out_m
        self.sent = [0] * n  # fixes published (= the last seq)
        self.first_t = [0] * n  # t of the device's first fix, ms
        self.last_t = [0] * n  # t of its latest fix, ms
        self.squeezed = 0  # uploads whose fixes were brought closer to stay in time order
        self.holding = False  # while set, violators report at home too (the warm-up)
        self.walked = [0.0] * n  # metres a violator seen at home has walked out so far
        self.outside = [0] * n  # fixes sent surely outside the radius (what confirms)
        self.published = 0
        self.index = {d: i for i, d in enumerate(ids)}
        self.acked = [0] * n
        self.acked_total = 0
        # Upload-to-ack: per device its uploads not acknowledged yet, (last seq, publish
        # time); per acknowledged upload, when its ack came and how long after publishing.
        self.unacked: list[list[tuple[int, float]] | None] = [None] * n
        self.ack_at = array("d")
        self.ack_lag = array("d")
        self.ack_sent_at = array("d")
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-fleet", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(0)  # as the service: no O(in flight) scans
        self.client.max_queued_messages_set(0)
        self.client.on_message = self._ack
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("em/v1/dev/+/ack", qos=1)
        self.client.loop_start()

    def _ack(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        if m.retain:
            return  # retained from an earlier run (the baseline acks the same device ids)
        i = self.index.get(m.topic.split("/")[3])
        if i is None:
            return
        upto = int(json.loads(m.payload)["upto"])
        now = time.monotonic()
        with self._lock:
            if upto > self.acked[i]:
                self.acked_total += upto - self.acked[i]
                self.acked[i] = upto
            waiting = self.unacked[i]
            while waiting and waiting[0][0] <= upto:
                _seq, sent = waiting.pop(0)
                self.ack_at.append(now)
                self.ack_lag.append(now - sent)
                self.ack_sent_at.append(sent)

    def ack_latency(self, since: float, until: float) -> tuple[int, float, float]:
        """Uploads published in [since, until): how many were acknowledged, and their
        upload-to-ack p50 and p99 in seconds."""
        with self._lock:
            lags = sorted(
                lag
                for sent, lag in zip(self.ack_sent_at, self.ack_lag, strict=True)
                if since <= sent < until
            )
        if not lags:
            return 0, math.nan, math.nan
        return len(lags), pct(lags, 50), pct(lags, 99)

    def resumed_after(self, at: float) -> float:
        """Seconds from `at` until the last upload published before it was acknowledged
        (a takeover: until every device the dead process held was acknowledged again)."""
        with self._lock:
            acked = [a for a, sent in zip(self.ack_at, self.ack_sent_at, strict=True) if sent < at]
            pending = any(w and w[0][1] < at for w in self.unacked)
        if pending:
            return math.nan
        return max(acked, default=at) - at

    def _upload(self, i: int) -> None:
        device = self.ids[i]
        away = self.bad[i] and not self.holding
        first = self.sent[i] + 1
        now_ms = int(time.time() * 1000)
        step = self.interval_ms
        n = self.per_upload
        if self.sent[i] and now_ms - (n - 1) * step <= self.last_t[i]:
            # Uploads come faster than per_upload × fix_interval: keep fixes in time order.
            step = max(1, (now_ms - self.last_t[i]) // n)
            self.squeezed += 1
        # How far east of home each fix is. A violator seen at home before (after a
        # warm-up) walks out at WALK_M_S, over this upload and the next if its fixes are
        # close together, rather than jumping 900 m between two fixes, which plausibility
        # would rightly call a spoofed position; one never seen at home starts outside.
        if not away:
            east = [0.0] * n
        elif not self.sent[i]:
            self.walked[i] = self.out_m
            east = [self.out_m] * n
        else:
            east = [
                min(self.out_m, self.walked[i] + WALK_M_S * step / 1000 * (k + 1)) for k in range(n)
            ]
            self.walked[i] = east[-1]
        self.outside[i] += sum(1 for e in east if e > RADIUS_M + 5.0)  # acc is 5 m
        fixes = [
            {
                "seq": first + k,
                "t": now_ms - (n - 1 - k) * step,
                "lat": HOME[1] + (self.out[1] - HOME[1]) * east[k] / (self.out_m or 1.0),
                "lon": HOME[0] + (self.out[0] - HOME[0]) * east[k] / (self.out_m or 1.0),
                "acc": 5.0,
                "src": "gnss",
            }
            for k in range(n)
        ]
        payload = json.dumps({"fixes": fixes}).encode()
        props = None
        if self.signing_key is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = ("sig", sign(self.signing_key, payload))
        sent_at = time.monotonic()
        with self._lock:
            waiting = self.unacked[i]
            if waiting is None:
                waiting = self.unacked[i] = []
            waiting.append((first + n - 1, sent_at))
        self.client.publish(f"em/v1/dev/{device}/up", payload, qos=1, properties=props)
        if not self.sent[i]:
            self.first_t[i] = now_ms - (n - 1) * step
        self.last_t[i] = now_ms
        self.sent[i] += n

    def run(self, seconds: float, rate: float, report: Reporter) -> int:
        """Fixes at `rate` per second in total, `per_upload` at a time, devices in turn."""
        start = time.monotonic()
        i = 0
        base = self.published
        while time.monotonic() - start < seconds:
            due = base + int((time.monotonic() - start) * rate)
            while self.published < due:
                self._upload(i % len(self.ids))
                i += 1
                self.published += self.per_upload
            report.tick(self.published, self.acked_total)
            time.sleep(0.005)
        report.tick(self.published, self.acked_total, force=True)
        report.offering = False
        return self.published - base

    def wait_acked(self, timeout_s: float, report: Reporter) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            report.tick(self.published, self.acked_total)
            if self.acked_total >= self.published and all(
                a >= s for a, s in zip(self.acked, self.sent, strict=True)
            ):
                report.tick(self.published, self.acked_total, force=True)
                return time.monotonic()
            time.sleep(0.02)
        report.tick(self.published, self.acked_total, force=True)
        return float("nan")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Operators:
    """`clients` websocket connections in one asyncio loop, in a process of their own (so
    the load generator's GIL does not delay them), recording latencies. A client the
    service cuts off reconnects with `after=` its last event id (counted)."""

    def __init__(
        self, base_url: str, token: str, clients: int, per_upload: int, interval_ms: int
    ) -> None:
        self.url = base_url.replace("http://", "ws://") + f"/api/v1/alerts/live?token={token}"
        self.clients = clients
        self.results: dict[str, Any] = {}
        ctx = multiprocessing.get_context("spawn")
        self._ready = ctx.Event()
        self._stop = ctx.Event()
        self._results: multiprocessing.queues.Queue[dict[str, Any]] = ctx.Queue()
        self.process = ctx.Process(
            target=_operators_main,
            daemon=True,
            args=(
                self.url,
                clients,
                per_upload,
                interval_ms,
                self._ready,
                self._stop,
                self._results,
            ),
        )
        self.process.start()

    def wait_ready(self, timeout_s: float) -> bool:
        return bool(self._ready.wait(timeout_s))

    def finish(self) -> dict[str, Any]:
        self._stop.set()
        self.results = self._results.get(timeout=120)
        self.process.join(30)
        return self.results


def _operators_main(
    url: str,
    clients: int,
    per_upload: int,
    interval_ms: int,
    ready: Any,
    stop: Any,
    results: Any,
) -> None:
    import uvloop

    op = _OperatorLoop(url, clients, per_upload, interval_ms, ready, stop)
    # The clients are the measuring instrument, on the service's two cores: the cheaper
    # they are, the less they take from what they measure (uvloop, and no timer per
    # message: see `_one`).
    uvloop.run(op.main())
    results.put(op.summary())


def _ms(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000


class _OperatorLoop:
    def __init__(
        self, url: str, clients: int, per_upload: int, interval_ms: int, ready: Any, stop: Any
    ) -> None:
        self.url = url
        self.clients = clients
        self.per_upload = per_upload
        self.interval_ms = interval_ms
        self.ready = ready
        self.stop = stop
        # Seconds from the alert's detail.last_fix.t to receipt: for the event that opened
        # the alert (its last fix is the one that confirmed the episode, maybe stamped
        # well before the upload that carried it), and for the later ones.
        self.fix_open = array("d")
        self.fix_update = array("d")
        # From the publish time of the upload that carried last_fix (its last fix's t),
        # and from the service's received_at of last_fix.
        self.upload = array("d")
        self.received = array("d")
        self.events = 0
        self.repeats = 0  # events of an alert that carried no new fix
        # Fix-to-operator latencies by the 30-s window they were received in (from the
        # first event), so a tail can be placed in the run's time line.
        self.windows: dict[int, array[float]] = {}
        self.first_ms = 0.0
        # Events over 1 s: (received, latency) in seconds from the first event, to place
        # a stall within its window.
        self.slow: list[tuple[float, float]] = []
        self.cpu_at: dict[int, float] = {}
        self.kinds: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.open: set[Any] = set()  # the clients' connections, closed at the end

    def _record(self, alert: dict[str, Any], now_ms: float, seen: dict[str, Any]) -> None:
        self.events += 1
        self.kinds[str(alert.get("kind"))] += 1
        alert_id = str(alert.get("id"))
        first = alert_id not in seen
        last = (alert.get("detail") or {}).get("last_fix") or {}
        known = seen.get(alert_id)
        seen[alert_id] = (last.get("seq"), last.get("t"))
        if not last.get("t"):
            return
        if not first and known == seen[alert_id]:
            # No new fix: an escalation, an acknowledgement, a note. Not a fix's latency.
            self.repeats += 1
            return
        t = _ms(last["t"])
        (self.fix_open if first else self.fix_update).append((now_ms - t) / 1000)
        self.first_ms = self.first_ms or now_ms
        window = int((now_ms - self.first_ms) / 30_000)
        if window not in self.windows:
            self.windows[window] = array("d")
            # This process's own CPU: a client that saturates its core delays what it
            # measures, and that is not the service's latency.
            self.cpu_at[window] = time.process_time()
        self.windows[window].append((now_ms - t) / 1000)
        if now_ms - t > 1000:
            self.slow.append(((now_ms - self.first_ms) / 1000, (now_ms - t) / 1000))
        seq = last.get("seq")
        if isinstance(seq, int):
            pos = (seq - 1) % self.per_upload
            published = t + (self.per_upload - 1 - pos) * self.interval_ms
            self.upload.append((now_ms - published) / 1000)
        if last.get("received_at"):
            self.received.append((now_ms - _ms(last["received_at"])) / 1000)

    async def _one(self, started: list[int]) -> None:
        after: int | None = None
        seen: dict[str, Any] = {}  # alert id -> the last fix its latest event carried
        counted = False
        while not self.stop.is_set():
            url = self.url + (f"&after={after}" if after is not None else "")
            try:
                async with websockets.connect(url, max_size=2**24, open_timeout=30) as ws:
                    if after is None:
                        snapshot = json.loads(await ws.recv())
                        after = int(snapshot.get("event_id") or 0)
                    if not counted:
                        started.append(1)
                        counted = True
                    self.open.add(ws)
                    async for raw in ws:  # ends when `_watch_stop` closes it
                        now_ms = time.time() * 1000
                        alert = json.loads(raw)["alert"]
                        after = int(alert["event_id"])
                        self._record(alert, now_ms, seen)
                    self.open.discard(ws)
                    if not self.stop.is_set():
                        self.closes["closed normally"] += 1
            except websockets.ConnectionClosed as exc:
                if self.stop.is_set():
                    break
                code = exc.rcvd.code if exc.rcvd is not None else None
                self.closes[f"closed {code}"] += 1
                await asyncio.sleep(0.1)
            except (OSError, TimeoutError) as exc:
                self.closes[type(exc).__name__] += 1
                await asyncio.sleep(1.0)

    async def _watch_stop(self) -> None:
        """Closes every client once the run is over (`stop`, set by another process)."""
        await asyncio.to_thread(self.stop.wait)
        for ws in list(self.open):
            await ws.close()

    async def main(self) -> None:
        started: list[int] = []
        watcher = asyncio.create_task(self._watch_stop())
        tasks = [asyncio.create_task(self._one(started)) for _ in range(self.clients)]
        deadline = asyncio.get_running_loop().time() + 120
        while len(started) < self.clients and asyncio.get_running_loop().time() < deadline:
            await asyncio.wait(tasks, timeout=0.05)  # polls the count; bounded in time
        self.ready.set()
        await watcher
        # A client that was reconnecting when the others were closed: cancelled.
        _, pending = await asyncio.wait(tasks, timeout=10)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def summary(self) -> dict[str, Any]:
        def figures(values: array[float]) -> dict[str, float]:
            return {
                "n": len(values),
                "p50": pct(values, 50),
                "p99": pct(values, 99),
                "p99.9": pct(values, 99.9),
                "max": max(values) if values else float("nan"),
                "mean": statistics.fmean(values) if values else float("nan"),
            }

        return {
            "events": self.events,
            "repeats": self.repeats,
            "kinds": dict(self.kinds),
            "closes": dict(self.closes),
            "fix": figures(self.fix_open + self.fix_update),
            "fix_open": figures(self.fix_open),
            "fix_update": figures(self.fix_update),
            "upload": figures(self.upload),
            "received": figures(self.received),
            "windows": {w * 30: figures(v) for w, v in sorted(self.windows.items())},
            "first_ms": self.first_ms,
            "slow": self.slow,
            "client_cpu": {
                w * 30: (self.cpu_at[w + 1] - self.cpu_at[w]) / 30
                for w in sorted(self.cpu_at)
                if w + 1 in self.cpu_at
            },
        }


def checkpoints(log: Path, first_ms: float) -> list[tuple[float, str, str]]:
    """PostgreSQL's checkpoints from its log (PostgreSQL 15 logs them by default): when
    each began, in seconds from the first alert event, why, and how long it took. A
    checkpoint's first minutes write a whole page to the WAL for every page first
    changed, so commits then take longer: a suspect for a window's tail."""
    found: list[tuple[float, str, str]] = []
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return found
    for line in lines:
        begun = " checkpoint starting: " in line
        if not begun and " checkpoint complete: " not in line:
            continue
        try:
            at = datetime.strptime(line[:27], "%Y-%m-%d %H:%M:%S.%f %Z").replace(tzinfo=UTC)
        except ValueError:
            continue
        offset_s = at.timestamp() - first_ms / 1000
        if begun:
            found.append((offset_s, line.split(" checkpoint starting: ", 1)[1], "unfinished"))
        elif found and found[-1][2] == "unfinished":
            took = line.split("total=", 1)[1].split(" ", 1)[0] if "total=" in line else "?"
            found[-1] = (found[-1][0], found[-1][1], f"{took.rstrip(';,')} s")
    return found


def autovacuums(log: Path, first_ms: float) -> list[tuple[float, float, str, str]]:
    """PostgreSQL's automatic vacuums and analyzes from its log (the bench's cluster logs
    every one): when each began and how long it ran, in seconds from the first alert
    event, what it did and to which table. A vacuum of a large chunk takes a core of
    the two for seconds: another suspect for a window's tail."""
    found: list[tuple[float, float, str, str]] = []
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return found
    pending: tuple[float, str, str] | None = None
    for line in lines:
        for what in ("vacuum", "analyze"):
            marker = f" automatic {what} of table "
            if marker in line:
                try:
                    at = datetime.strptime(line[:27], "%Y-%m-%d %H:%M:%S.%f %Z")
                except ValueError:
                    continue
                table = line.split(marker, 1)[1].split('"')[1].rsplit(".", 1)[-1]
                pending = (at.replace(tzinfo=UTC).timestamp() - first_ms / 1000, what, table)
        if pending is not None and "elapsed: " in line:
            ended, what, table = pending
            elapsed = float(line.split("elapsed: ", 1)[1].split(" ", 1)[0])
            found.append((ended - elapsed, elapsed, what, table))
            pending = None
    return found


def _latency_line(name: str, f: dict[str, float]) -> str:
    if not f["n"]:
        return f"  {name:<34} no events"
    return (
        f"  {name:<34} p50 {f['p50'] * 1000:8,.0f} ms  p99 {f['p99'] * 1000:8,.0f} ms"
        f"  p99.9 {f['p99.9'] * 1000:8,.0f} ms  max {f['max'] * 1000:8,.0f} ms"
        f"  ({f['n']:,} events)"
    )


def baseline(pg: Postgres, broker: Mosquitto, ids: list[str], args: argparse.Namespace) -> None:
    """A bare consumer: paho (manual ack) → JSON → COPY → ack. No rules, no alerts."""
    url = pg.create_database("baseline")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE fixes (device_id text, seq bigint, t timestamptz,"
            " lat float8, lon float8, acc real)"
        )
    pending: list[mqtt.MQTTMessage] = []
    lock = threading.Lock()
    consumer = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id="bench-baseline",
        protocol=mqtt.MQTTv5,
        manual_ack=True,
    )

    def got(_c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        with lock:
            pending.append(m)

    consumer.on_message = got
    consumer.max_inflight_messages_set(0)  # as the service
    consumer.connect("127.0.0.1", broker.port)
    consumer.subscribe("em/v1/dev/+/up", qos=1)
    consumer.loop_start()
    stop = threading.Event()

    # Fix-to-commit, from each upload's last fix (stamped when it was published): what
    # the bare path costs before any rule, alert or websocket.
    stored = array("d")

    def writer() -> None:
        with psycopg.connect(url) as conn:
            while not stop.is_set():
                with lock:
                    batch = pending[:500]
                    del pending[:500]
                if not batch:
                    time.sleep(0.005)
                    continue
                uptos: dict[str, int] = {}
                newest: list[float] = []
                with conn.cursor().copy("COPY fixes FROM STDIN") as copy:
                    for m in batch:
                        device = m.topic.split("/")[3]
                        fixes = json.loads(m.payload)["fixes"]
                        newest.append(max(f["t"] for f in fixes))
                        for f in fixes:
                            copy.write_row(
                                (
                                    device,
                                    f["seq"],
                                    datetime.fromtimestamp(f["t"] / 1000, UTC),
                                    f["lat"],
                                    f["lon"],
                                    f["acc"],
                                )
                            )
                            uptos[device] = max(uptos.get(device, 0), f["seq"])
                conn.commit()
                committed_ms = time.time() * 1000
                stored.extend((committed_ms - t) / 1000 for t in newest)
                for device, upto in uptos.items():
                    consumer.publish(
                        f"em/v1/dev/{device}/ack", json.dumps({"upto": upto}), qos=1, retain=True
                    )
                for m in batch:
                    consumer.ack(m.mid, 1)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    fleet = Fleet(broker.port, ids, args.per_upload, args.fix_interval, 0.0, 0.0)
    report = Reporter("baseline", None)
    start = time.monotonic()
    made = fleet.run(args.baseline_seconds or args.seconds, args.rate, report)
    done = fleet.wait_acked(300, report)
    fleet.close()
    stop.set()
    thread.join(10)
    consumer.loop_stop()
    consumer.disconnect()
    print(
        f"baseline   {made:>8} fixes acknowledged in {done - start:6.1f} s"
        f" = {made / (done - start):8,.0f} fixes/s (offered {args.rate}/s); {report.summary()}"
    )
    rows = _rows(url)
    print(
        f"baseline   {rows / (done - start):8,.0f} fix rows/s in the database;"
        " no service memory to report (the bare consumer is threads of this process)"
    )
    print(
        _latency_line(
            "baseline fix-to-commit",
            {
                "n": len(stored),
                "p50": pct(stored, 50),
                "p99": pct(stored, 99),
                "p99.9": pct(stored, 99.9),
                "max": max(stored) if stored else float("nan"),
            },
        )
    )


def _table_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        tables = [
            str(r[0])
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            ).fetchall()
        ]
        out: dict[str, int] = {}
        for t in tables:
            row = conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()
            out[t] = int(row[0]) if row else 0
        return out


def enrol(
    pg: Postgres, api: Api, n: int, fix_s: float, upload_s: float, signed: bool = False
) -> bytes | None:
    """One template subject through the API exactly as an operator would (subject,
    yellow status with its home, unsigned bracelet), then SQL clones of it to `n` in
    all, into every table the API wrote (checked: the bench stops if the API writes a
    table the clone does not know)."""
    before = _table_counts(pg.url)
    sid = api.subject("BENCH-000001")
    api.put(
        f"/api/v1/subjects/{sid}/status",
        {"status": "yellow", "home": list(HOME), "effective_at": ASSIGNED_AT},
    )
    creds = api.enrol("BP-000001", sid, signed=signed, assigned_at=ASSIGNED_AT)
    key = decode_key(creds["signing_key"]) if creds.get("signing_key") else None
    after = _table_counts(pg.url)
    wrote = sorted(t for t in after if after[t] != before.get(t, 0))
    if wrote != sorted(CLONED + NOT_CLONED):
        raise SystemExit(
            f"the API wrote {wrote} for one subject; the bench clones {list(CLONED)}"
            f" (and skips {list(NOT_CLONED)}): update enrol() in bench/pipeline.py"
        )
    if n < 2:
        return key
    # Clone n: subject md5('bench-subject-n'), zone md5('bench-zone-n-{template zone}'),
    # device BP-{n:06d}, external id BENCH-{n:06d}; every other column as the template's
    # (the same home, status, times and MQTT password hash). The audit log is not cloned:
    # its rows are hash-chained one at a time, and no reader here needs them.
    subject = "md5('bench-subject-' || n)::uuid"
    statements = [
        "INSERT INTO subjects (id, name, external_id, timezone, officer, created_at, updated_at)"
        f" SELECT {subject}, name, 'BENCH-' || lpad(n::text, 6, '0'), timezone, officer,"
        " created_at, updated_at FROM subjects, generate_series(2, %(n)s) n"
        " WHERE id = %(sid)s",
        "INSERT INTO zones (id, subject_id, zone_set, kind, name, feature, schedule, source,"
        " valid_from, valid_until, created_at, created_by)"
        f" SELECT md5('bench-zone-' || n || '-' || id)::uuid, {subject}, zone_set, kind, name,"
        " feature, schedule, source, valid_from, valid_until, created_at, created_by"
        " FROM zones, generate_series(2, %(n)s) n WHERE subject_id = %(sid)s",
        "INSERT INTO subject_statuses (subject_id, status, home_lon, home_lat, radius_m,"
        " zone_id, effective_at, recorded_at, set_by)"
        f" SELECT {subject}, status, home_lon, home_lat, radius_m,"
        " md5('bench-zone-' || n || '-' || zone_id)::uuid, effective_at, recorded_at, set_by"
        " FROM subject_statuses, generate_series(2, %(n)s) n WHERE subject_id = %(sid)s",
        "INSERT INTO devices (device_id, kind, subject_id, assigned_at, owntracks_topic,"
        " signed, signing_key, mqtt_password_hash, enrolled_at, fix_interval_s,"
        " upload_interval_s)"
        f" SELECT 'BP-' || lpad(n::text, 6, '0'), kind, {subject}, assigned_at,"
        " owntracks_topic, signed, signing_key, mqtt_password_hash, enrolled_at,"
        " fix_interval_s, upload_interval_s"
        " FROM devices, generate_series(2, %(n)s) n WHERE device_id = 'BP-000001'",
    ]
    with psycopg.connect(pg.url) as conn:
        for sql in statements:
            conn.execute(sql, {"n": n, "sid": sid})
        # The intervals the fleet keeps (an operator sets them with `set_interval`), so
        # liveness expects an upload every `upload_s`, not the default minute.
        conn.execute(
            "UPDATE devices SET fix_interval_s = %s, upload_interval_s = %s"
            " WHERE device_id LIKE 'BP-%%'",
            (max(1, round(fix_s)), max(1, round(upload_s))),
        )
        conn.execute("ANALYZE subjects, zones, subject_statuses, devices")
    counts = _table_counts(pg.url)
    for table in CLONED:
        if counts[table] != before.get(table, 0) + n:
            raise SystemExit(f"{table}: {counts[table]} rows after cloning, expected {n}")
    return key


def stored_once(url: str, fleet: Fleet) -> None:
    """Straight from the database, for every device at once: each fix it published is
    stored, once (device-sim check says the same through the API, one subject at a time)."""
    started = time.monotonic()
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT device_id, count(*), count(DISTINCT seq), max(seq) FROM fixes"
            " GROUP BY device_id"
        ).fetchall()
    stored = {str(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in rows}
    missing = doubled = extra = 0
    for i, device in enumerate(fleet.ids):
        count, distinct, top = stored.pop(device, (0, 0, 0))
        missing += fleet.sent[i] - min(distinct, fleet.sent[i])
        doubled += count - distinct
        extra += max(0, top - fleet.sent[i])
    print(
        f"database   {sum(fleet.sent):,} fixes published, {missing:,} not stored,"
        f" {doubled:,} stored twice, {extra:,} beyond what was sent,"
        f" {len(stored):,} unknown devices (SQL, {time.monotonic() - started:.1f} s)"
    )


def sample(fleet: Fleet, every: int) -> list[int]:
    """The devices device-sim check reads: all, or every `every`-th and every violating
    one (--check-sample)."""
    return [i for i in range(len(fleet.ids)) if every <= 1 or i % every == 0 or fleet.bad[i]]


def write_journals(fleet: Fleet, state_dir: Path, which: list[int]) -> None:
    """Each device's journal as device_sim/journal.py keeps it once everything was
    compacted: state.json, and acked.jsonl with one span of fixes (t bounds in ms)."""
    root = state_dir / "devices"
    for i in which:
        device = fleet.ids[i]
        directory = root / device
        directory.mkdir(parents=True, exist_ok=True)
        n = fleet.sent[i]
        state = {"acked_upto": fleet.acked[i], "next_seq": n + 1}
        (directory / "state.json").write_text(json.dumps(state), encoding="utf-8")
        if n:
            span = ["fix", 1, n, fleet.first_t[i], fleet.last_t[i]]
            (directory / "acked.jsonl").write_text(json.dumps(span) + "\n", encoding="utf-8")


def write_expect(
    fleet: Fleet,
    which: list[int],
    subjects: dict[str, str],
    path: Path,
    state_dir: Path,
    api_url: str,
) -> int:
    """Each violating device that sent enough fixes outside to confirm (3) has a
    zone_exit alert for its subject. Compliant subjects get no `absent` expectation:
    that would be one alerts read per subject; see the SQL tally instead."""
    expect = ExpectFile(prefix="BP", api_url=api_url, state_dir=str(state_dir))
    expect.scenarios.append("bench-violating")
    for i in which:
        device = fleet.ids[i]
        if fleet.bad[i] and fleet.outside[i] >= 3:
            expect.expectations.append(
                AlertExpectation(
                    scenario="bench-violating",
                    kind="zone_exit",
                    subject_id=subjects[device],
                    device_id=device,
                    why=f"reported {OUT_M:.0f} m from home",
                )
            )
    expect.save(path)
    return len(expect.expectations)


def alert_tally(url: str, fleet: Fleet, subjects: dict[str, str]) -> None:
    """What the database holds, by kind, against the violating devices that reported."""
    with psycopg.connect(url) as conn:
        kinds = conn.execute(
            "SELECT kind, count(*), count(DISTINCT subject_id) FROM alerts GROUP BY kind"
        ).fetchall()
        exits = {
            str(r[0])
            for r in conn.execute(
                "SELECT DISTINCT subject_id FROM alerts WHERE kind = 'zone_exit'"
            ).fetchall()
        }
    expected = {subjects[d] for i, d in enumerate(fleet.ids) if fleet.outside[i] >= 3}
    by_kind = ", ".join(f"{k} ×{n:,} ({s:,} subjects)" for k, n, s in kinds) or "none"
    print(
        f"alerts     in the database: {by_kind}; zone_exit subjects: {len(exits & expected):,}"
        f" of {len(expected):,} violating that sent 3 fixes outside,"
        f" {len(exits - expected):,} others"
    )


def run_check(
    args: argparse.Namespace, service: Monitor, fleet: Fleet, pg: Postgres, work: Path
) -> None:
    with psycopg.connect(pg.url) as conn:
        subjects = {
            str(r[0]): str(r[1])
            for r in conn.execute("SELECT device_id, subject_id FROM devices").fetchall()
        }
    alert_tally(pg.url, fleet, subjects)
    stored_once(pg.url, fleet)
    started = time.monotonic()
    state_dir = work / "sim"
    which = sample(fleet, args.check_sample)
    write_journals(fleet, state_dir, which)
    expect_file = work / "expected.json"
    n_expect = write_expect(fleet, which, subjects, expect_file, state_dir, service.base_url)
    wrote = time.monotonic() - started
    out = work / "check.txt"
    command = [
        str(ROOT / ".venv/bin/device-sim"),
        "check",
        "--api-url",
        service.base_url,
        "--admin-user",
        "admin",
        "--admin-password",
        stack.ADMIN_PASSWORD,
        "--state-dir",
        str(state_dir),
        "--expect-file",
        str(expect_file),
        "--workers",
        str(args.check_workers),
    ]
    print(
        f"check      {len(which):,} journals and {n_expect:,} alert expectations written"
        f" in {wrote:.1f} s; running device-sim check ({args.check_workers} workers)",
        flush=True,
    )
    started = time.monotonic()
    with out.open("w") as sink:
        status = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, check=False)
    took = time.monotonic() - started
    lines = out.read_text(errors="replace").splitlines()
    summary = [ln for ln in lines if ln.startswith("check:")]
    print(
        f"check      exit status {status.returncode} in {took:.1f} s"
        f" ({len(which) / took:,.0f} devices/s): {summary[-1] if summary else '(no summary)'}"
    )
    if status.returncode != 0:
        at = next((k for k, ln in enumerate(lines) if ln.startswith("differences:")), None)
        shown = lines[at : at + 21] if at is not None else lines[-20:]
        for ln in shown:
            print(f"           {ln}")
    print(f"           full output: {out}")


def start_profile(args: argparse.Namespace, pid: int) -> subprocess.Popen[bytes] | None:
    if not args.profile:
        return None
    return subprocess.Popen(
        [
            str(ROOT / ".venv/bin/py-spy"),
            "record",
            "-p",
            str(pid),
            "-o",
            args.profile,
            "-d",
            str(int(args.seconds)),
            "-r",
            "50",
            # Only the thread holding the GIL: the service is bound by it, so shares of
            # GIL time say where a fix's cost goes (threads waiting for it are not work).
            "--gil",
            # Collapsed stacks for a .txt name (readable in a terminal), else SVG.
            "-f",
            "raw" if args.profile.endswith(".txt") else "flamegraph",
        ],
        stdout=subprocess.DEVNULL,
    )


def timed(what: str, fn: Callable[[], object]) -> float:
    started = time.monotonic()
    fn()
    took = time.monotonic() - started
    print(f"{what} in {took:.1f} s", flush=True)
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--devices", type=int, default=100_000, help="enrolled subjects, one each")
    ap.add_argument("--seconds", type=float, default=60, help="how long fixes are offered")
    ap.add_argument("--rate", type=float, default=10_000, help="fixes per second offered")
    ap.add_argument("--clients", type=int, default=50, help="websocket operator clients")
    ap.add_argument("--per-upload", type=int, default=10, help="fixes per upload")
    ap.add_argument("--fix-interval", type=float, default=10.0, help="seconds between fixes")
    ap.add_argument(
        "--violating",
        type=float,
        default=0.05,
        help="share of devices outside their radius (each raises an alert)",
    )
    ap.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the bare consumer first (as long as the service run)",
    )
    ap.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="MONITOR_X=VALUE",
        help="a setting for the service (repeatable), e.g. MONITOR_BATCH_MAX_MESSAGES=200",
    )
    ap.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a PostgreSQL setting for the run's cluster (repeatable), e.g. max_wal_size=8GB",
    )
    ap.add_argument(
        "--baseline-seconds",
        type=float,
        help="how long the bare consumer runs (default: --seconds); a soak can keep it short",
    )
    ap.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after the run, device-sim check over journals written for every device",
    )
    ap.add_argument("--check-workers", type=int, default=8, help="device-sim check --workers")
    ap.add_argument(
        "--check-sample",
        type=int,
        default=1,
        metavar="K",
        help="device-sim check reads every K-th device and every violating one (1: all)",
    )
    ap.add_argument(
        "--profile",
        metavar="FILE",
        help="record the service with py-spy while the fleet runs (a flame graph SVG)",
    )
    ap.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="offer fixes this long first, every device at home, unmeasured: with"
        " devices × per-upload / rate seconds (100 s by default) the service has met every"
        " subject once, and the run measures the steady state rather than a restart",
    )
    ap.add_argument(
        "--api-process",
        action="store_true",
        help="a second service process (MONITOR_INGEST=false) serves the websocket clients,"
        " so the fan-out to them runs beside the ingesting process, not in it",
    )
    ap.add_argument(
        "--signed",
        action="store_true",
        help="devices enrolled as signed: every upload carries its HMAC (as production)",
    )
    ap.add_argument(
        "--cluster",
        type=int,
        default=0,
        metavar="N",
        help="cluster mode: N ingesting processes over a NATS JetStream cluster (0: one"
        " process straight from the broker)",
    )
    ap.add_argument("--nats-nodes", type=int, default=3, help="NATS servers in cluster mode")
    ap.add_argument(
        "--kill-at",
        type=float,
        metavar="S",
        help="cluster mode: SIGKILL the last process S seconds into the measured run",
    )
    ap.add_argument(
        "--single-too",
        action="store_true",
        help="cluster mode: then the same measured run in single-process mode, on the same"
        " servers and fleet, and the two as a ratio",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    work, pg, broker = stack.servers(
        pg_settings={
            # Every autovacuum in the log, to be placed on the run's time line.
            "log_autovacuum_min_duration": "0",
            **dict(kv.split("=", 1) for kv in args.pg_setting),
        }
    )
    print(f"work       {work}")
    period = args.devices * args.per_upload / args.rate
    print(
        f"offered    {args.rate:,.0f} fixes/s from {args.devices:,} devices, {args.per_upload}"
        f" fixes per upload: each device uploads every {period:,.1f} s"
        f" (a fix every {args.fix_interval:g} s makes {args.per_upload * args.fix_interval:g} s)"
    )
    ids = device_ids(args.devices)
    try:
        if args.baseline:
            baseline(pg, broker, ids, args)
        nats = NatsCluster(work / "nats", size=args.nats_nodes) if args.cluster else None
        if nats is not None:
            timed(f"nats       {args.nats_nodes} JetStream servers up", nats.start)

        def make(i: int, clustered: bool) -> Monitor:
            return stack.service(
                work,
                pg,
                broker,
                {
                    "MONITOR_INSTANCE": f"bench-svc-{i + 1}" if clustered else "bench-svc",
                    **({"MONITOR_NATS_URL": nats.url} if clustered and nats is not None else {}),
                    **dict(kv.split("=", 1) for kv in args.service_env),
                },
                name=f"svc-{i + 1}" if clustered else "svc",
            )

        services = (
            [make(i, True) for i in range(args.cluster)] if args.cluster else [make(0, False)]
        )
        service = services[0]
        for each in services:
            each.start()
        extra: list[Monitor] = []
        try:
            api = Api.login(service.base_url, "admin", stack.ADMIN_PASSWORD)
            keys: list[bytes | None] = []
            timed(
                f"enrolment  {args.devices:,} subjects{', signed' if args.signed else ''}",
                lambda: keys.append(
                    enrol(
                        pg,
                        api,
                        args.devices,
                        args.fix_interval,
                        args.devices * args.per_upload / args.rate,
                        signed=args.signed,
                    )
                ),
            )
            key = keys[0]

            def restart() -> None:
                for each in services:
                    each.stop()
                for each in services:
                    each.start(wait_healthy=False)
                for each in services:
                    wait_for(each.healthy, 600, "the service after its restart", 0.2)

            timed("restart    service healthy again", restart)
            assert service.proc is not None
            pid = service.proc.pid
            api = Api.login(service.base_url, "admin", stack.ADMIN_PASSWORD)
            fleet = Fleet(
                broker.port, ids, args.per_upload, args.fix_interval, args.violating, OUT_M, key
            )
            if args.warmup:
                warm_up(fleet, args, pid, service.base_url)
            serving = service
            if args.api_process:
                serving = stack.service(
                    work,
                    pg,
                    broker,
                    {
                        **dict(kv.split("=", 1) for kv in args.service_env),
                        "MONITOR_INSTANCE": "bench-api",
                        "MONITOR_INGEST": "false",
                    },
                    name="api",
                )
                timed("api        second process (MONITOR_INGEST=false) healthy", serving.start)
                extra.append(serving)
                api = Api.login(serving.base_url, "admin", stack.ADMIN_PASSWORD)
            label = f"cluster of {args.cluster}" if args.cluster else "single process"
            outcome = measured(args, label, services, serving, api, fleet, pg)
            if args.check:
                run_check(args, service, fleet, pg, work)
            if args.cluster and args.single_too:
                for each in services:
                    each.stop()
                single = make(0, False)
                services.append(single)
                timed("single     one process straight from the broker, healthy", single.start)
                api = Api.login(single.base_url, "admin", stack.ADMIN_PASSWORD)
                alone = measured(args, "single process", [single], single, api, fleet, pg)
                print(
                    f"ratio      cluster / single: {outcome['rate'] / alone['rate']:.2f} of the"
                    f" fixes/s; fix-to-operator p99 {outcome['p99'] * 1000:,.0f} ms against"
                    f" {alone['p99'] * 1000:,.0f} ms; upload-to-ack p99"
                    f" {outcome['ack_p99'] * 1000:,.0f} ms against"
                    f" {alone['ack_p99'] * 1000:,.0f} ms"
                )
        finally:
            with contextlib.suppress(NameError):
                fleet.close()
            for other in extra:
                other.stop()
            for each in services:
                each.stop()
            if nats is not None:
                nats.stop()
    finally:
        broker.stop()
        pg.stop()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
        else:
            print(f"kept       {work}")


def measured(
    args: argparse.Namespace,
    label: str,
    services: list[Monitor],
    serving: Monitor,
    api: Api,
    fleet: Fleet,
    pg: Postgres,
) -> dict[str, float]:
    """One measured run against `services` (the first one reported on): the figures
    printed, and the main ones returned for a comparison between modes."""
    service = services[0]
    assert service.proc is not None
    pid = service.proc.pid
    interval_ms = round(args.fix_interval * 1000)
    operators = Operators(serving.base_url, api.token, args.clients, args.per_upload, interval_ms)
    operators.wait_ready(120)
    print(f"operators  {args.clients} websocket clients connected", flush=True)
    s0, a0 = cpu()
    rows0 = _rows(pg.url)
    spy = start_profile(args, pid)
    report = Reporter("service ", pid, fleet.published, fleet.acked_total, service.base_url)
    start = time.monotonic()
    killed: list[float] = []
    if args.kill_at is not None and len(services) > 1:
        victim = services[-1]

        def kill() -> None:
            assert victim.proc is not None
            os.killpg(victim.proc.pid, signal.SIGKILL)  # the process and its broker relay
            killed.append(time.monotonic())
            print(
                f"  SIGKILL    {victim.env['MONITOR_INSTANCE']} at t={args.kill_at:g} s", flush=True
            )

        threading.Timer(args.kill_at, kill).start()
    made = fleet.run(args.seconds, args.rate, report)
    if spy is not None:
        spy.wait(60)
    done = fleet.wait_acked(600, report)
    rows1 = _rows(pg.url)
    s1, a1 = cpu()
    time.sleep(2)  # let the last alert events reach the clients
    results = operators.finish()
    print(
        f"service    {made:>8} fixes acknowledged in {done - start:6.1f} s"
        f" = {made / (done - start):8,.0f} fixes/s (offered {args.rate}/s,"
        f" {args.violating:.0%} of devices violating); {report.summary()}"
    )
    if (loop := report.loop_summary()) is not None:
        print(f"service    event loop: {loop}")
    if fleet.squeezed:
        print(
            f"           {fleet.squeezed:,} uploads came sooner than"
            f" {args.per_upload} × {args.fix_interval:g} s: their fixes were stamped"
            " closer together (upload-based latency is approximate for them)"
        )
    print(f"database   {(rows1 - rows0) / (done - start):8,.0f} fix rows/s")
    kinds = ", ".join(f"{k} ×{n:,}" for k, n in sorted(results["kinds"].items()))
    closes = ", ".join(f"{k} ×{n}" for k, n in sorted(results["closes"].items()))
    print(
        f"operators  {args.clients} websocket clients, {results['events']:,} alert events"
        f" received ({kinds or 'none'}); disconnections: {closes or 'none'}"
    )
    print(_latency_line("fix-to-operator (last_fix.t), all", results["fix"]))
    print(_latency_line("  events opening an alert", results["fix_open"]))
    print(_latency_line("  later events with a new fix", results["fix_update"]))
    print(
        f"  {results['repeats']:,} events carried no new fix (escalations,"
        " acknowledgements): not counted in the latencies"
    )
    print(_latency_line("upload-to-operator (publish time)", results["upload"]))
    print(_latency_line("received_at-to-operator", results["received"]))
    late = {w: f for w, f in results["windows"].items() if f["p99"] > 1.0}
    print(
        f"  30-s windows (from the first event) with fix-to-operator p99 over 1 s:"
        f" {len(late)} of {len(results['windows'])}"
    )
    for w, f in late.items():
        print(_latency_line(f"    {w:>4}–{w + 30:<4} s", f))
        slow = [(at, lag) for at, lag in results["slow"] if w <= at < w + 30]
        if slow:
            print(
                f"{'':38}{len(slow):,} events over 1 s, received"
                f" {min(at for at, _ in slow):.1f}–{max(at for at, _ in slow):.1f} s,"
                " their fixes taken from"
                f" {min(at - lag for at, lag in slow):.1f} s"
            )
    if results["first_ms"]:
        ends = max(results["windows"], default=0) + 30
        during = [
            f"{at:,.0f} s ({why}, {took})"
            for at, why, took in checkpoints(pg.log_path, results["first_ms"])
            if -30 <= at <= ends
        ]
        print(
            "  PostgreSQL checkpoints begun (s from the first event):"
            f" {', '.join(during) or 'none'}"
        )
        long = [
            f"{at:,.0f} s ({what} {table}, {took:.1f} s)"
            for at, took, what, table in autovacuums(pg.log_path, results["first_ms"])
            if -30 <= at <= ends and took >= 0.5
        ]
        print(
            "  PostgreSQL autovacuums of 0.5 s or more begun (s from the first event):"
            f" {', '.join(long) or 'none'}"
        )
    busy = results["client_cpu"]
    if busy:
        print(
            "  the clients' own process, CPU per 30-s window: median"
            f" {statistics.median(busy.values()):.0%}, max {max(busy.values()):.0%}"
            f" ({max(busy, key=busy.__getitem__)} s)"
        )
    print(f"memory     service RSS {rss_mb(pid):.0f} MiB")
    if serving is not service and serving.proc is not None:
        print(f"memory     api process RSS {rss_mb(serving.proc.pid):.0f} MiB")
    print(f"machine    CPU steal {100 * (s1 - s0) / max(1, a1 - a0):.1f} %", flush=True)
    n_up, up50, up99 = fleet.ack_latency(start, start + args.seconds)
    print(
        f"acks       upload-to-ack over {n_up:,} uploads: p50 {up50 * 1000:,.0f} ms,"
        f" p99 {up99 * 1000:,.0f} ms"
    )
    n_first, _f50, first99 = fleet.ack_latency(start, start + 60)
    print(f"acks       the first minute: p99 {first99 * 1000:,.0f} ms over {n_first:,} uploads")
    outcome = {
        "rate": made / (done - start),
        "p99": results["fix"].get("p99", math.nan),
        "ack_p99": up99,
    }
    if killed:
        took = fleet.resumed_after(killed[0])
        n_after, _a50, after99 = fleet.ack_latency(killed[0], killed[0] + 60)
        print(
            f"takeover   every upload published before the SIGKILL acknowledged {took:.1f} s"
            f" after it; upload-to-ack in the minute after it: p99 {after99 * 1000:,.0f} ms"
            f" over {n_after:,} uploads"
        )
        outcome["takeover_s"] = took
        outcome["after_kill_p99"] = after99
    for other in services[1:]:
        if other.proc is not None and other.proc.poll() is None:
            print(
                f"memory     {other.env['MONITOR_INSTANCE']} RSS {rss_mb(other.proc.pid):.0f} MiB"
            )
    print(
        f"mode       {label}: {outcome['rate']:,.0f} fixes/s, fix-to-operator p99"
        f" {outcome['p99'] * 1000:,.0f} ms, upload-to-ack p99 {up99 * 1000:,.0f} ms",
        flush=True,
    )
    return outcome


def warm_up(fleet: Fleet, args: argparse.Namespace, pid: int, base_url: str) -> None:
    """Every device reporting at home for `--warmup` seconds before the measured run, so
    the service has met each subject once (as a service that has been running has) and
    the run measures the steady state; the violators leave their radius only when the
    measured run starts, so their alerts open during it. Printed, never counted."""
    report = Reporter("warm-up ", pid, base_url=base_url)
    fleet.holding = True
    started = time.monotonic()
    made = fleet.run(args.warmup, args.rate, report)
    done = fleet.wait_acked(600, report)
    fleet.holding = False
    print(
        f"warm-up    {made:>8} fixes acknowledged in {done - started:6.1f} s"
        f" = {made / (done - started):8,.0f} fixes/s, every device at home; {report.summary()}",
        flush=True,
    )
    # Right after the restart every subject is met for the first time: its warm-up reads.
    n, p50, p99 = fleet.ack_latency(started, started + 60)
    print(
        f"warm-up    the first minute after the restart: upload-to-ack p50 {p50 * 1000:,.0f} ms,"
        f" p99 {p99 * 1000:,.0f} ms over {n:,} uploads",
        flush=True,
    )


def _rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM fixes").fetchone()
        return int(row[0]) if row else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
