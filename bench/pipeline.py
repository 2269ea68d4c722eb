"""The end-to-end benchmark: simulated devices → Mosquitto → monitor serve → TimescaleDB →
websocket operators, beside a bare baseline (a raw paho consumer that COPYs fixes and
judges nothing), measured in the same run so each feature's cost is a ratio.

    .venv/bin/python bench/pipeline.py [--devices 200] [--seconds 60] [--rate 2000]
                                       [--clients 200] [--per-upload 10]

Prints: fixes/s acknowledged, fix-to-operator latency p50/p99/p99.9 over every alert
event each websocket client received, service RSS, database rows/s, CPU steal. No
assertions: figures only. Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.queues
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import websockets
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geofences.geodesy import offset  # noqa: E402
from tests.client import Api  # noqa: E402
from tests.servers import Monitor, Mosquitto, Postgres  # noqa: E402

HOME = (71.4304, 51.1282)


def cpu() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return fields[7], sum(fields)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class Fleet:
    """Publishes uploads for many devices from one thread, paced, capping in-flight."""

    def __init__(self, port: int, ids: list[str], per_upload: int) -> None:
        self.ids = ids
        self.per_upload = per_upload
        self.acked: dict[str, int] = {}
        self.sent: dict[str, int] = dict.fromkeys(ids, 0)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-fleet", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(500)
        self.client.max_queued_messages_set(0)
        self.client.on_message = self._ack
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("em/v1/dev/+/ack", qos=1)
        self.client.loop_start()

    def _ack(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        self.acked[m.topic.split("/")[3]] = json.loads(m.payload)["upto"]

    def run(self, seconds: float, rate: float, out_m: float, violating: float = 1.0) -> int:
        """Fixes at `rate` per second in total; the first `violating` share of devices
        report `out_m` metres east of home (outside the 500 m radius when out_m > 500),
        the others at home."""
        out = offset(HOME[0], HOME[1], out_m, 0.0)
        bad = set(self.ids[: max(1, round(len(self.ids) * violating))]) if out_m else set()
        start = time.monotonic()
        made = 0
        i = 0
        while time.monotonic() - start < seconds:
            due = int((time.monotonic() - start) * rate)
            while made < due:
                device = self.ids[i % len(self.ids)]
                i += 1
                lon, lat = out if device in bad else HOME
                first = self.sent[device] + 1
                t = int(time.time() * 1000) - 1000
                fixes = [
                    {
                        "seq": first + k,
                        "t": t + k,
                        "lat": lat,
                        "lon": lon,
                        "acc": 5.0,
                        "src": "gnss",
                    }
                    for k in range(self.per_upload)
                ]
                self.client.publish(f"em/v1/dev/{device}/up", json.dumps({"fixes": fixes}), qos=1)
                self.sent[device] += self.per_upload
                made += self.per_upload
            time.sleep(0.005)
        return made

    def wait_acked(self, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.acked.get(d, 0) >= n for d, n in self.sent.items()):
                return time.monotonic()
            time.sleep(0.02)
        return float("nan")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Operators:
    """`clients` websocket connections in one asyncio loop, in a process of their own (so
    the load generator's GIL does not delay them), recording latencies."""

    def __init__(self, base_url: str, token: str, clients: int) -> None:
        self.url = base_url.replace("http://", "ws://") + f"/api/v1/alerts/live?token={token}"
        self.clients = clients
        self.latencies: list[float] = []
        self.events = 0
        ctx = multiprocessing.get_context("spawn")
        self._ready = ctx.Event()
        self._stop = ctx.Event()
        self._results: multiprocessing.queues.Queue[tuple[list[float], int]] = ctx.Queue()
        self.process = ctx.Process(
            target=_operators_main,
            daemon=True,
            args=(self.url, clients, self._ready, self._stop, self._results),
        )
        self.process.start()

    def wait_ready(self, timeout_s: float) -> bool:
        return bool(self._ready.wait(timeout_s))

    def finish(self) -> None:
        self._stop.set()
        self.latencies, self.events = self._results.get(timeout=60)
        self.process.join(30)


def _operators_main(url: str, clients: int, ready: Any, stop: Any, results: Any) -> None:
    op = _OperatorLoop(url, clients, ready, stop)
    asyncio.run(op.main())
    results.put((op.latencies, op.events))


class _OperatorLoop:
    def __init__(self, url: str, clients: int, ready: Any, stop: Any) -> None:
        self.url = url
        self.clients = clients
        self.ready = ready
        self.stop = stop
        self.latencies: list[float] = []
        self.events = 0

    async def _one(self, started: list[int]) -> None:
        async with websockets.connect(self.url, max_size=2**24, open_timeout=30) as ws:
            await ws.recv()  # the snapshot
            started.append(1)
            while not self.stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                now = datetime.now(UTC).timestamp()
                alert = json.loads(raw)["alert"]
                last = (alert.get("detail") or {}).get("last_fix") or {}
                if last.get("received_at"):
                    sent = datetime.fromisoformat(last["received_at"].replace("Z", "+00:00"))
                    self.latencies.append(now - sent.timestamp())
                self.events += 1

    async def main(self) -> None:
        started: list[int] = []
        tasks = [asyncio.create_task(self._one(started)) for _ in range(self.clients)]
        deadline = asyncio.get_running_loop().time() + 120
        while len(started) < self.clients and asyncio.get_running_loop().time() < deadline:
            await asyncio.wait(tasks, timeout=0.05)  # polls the count; bounded in time
        self.ready.set()
        await asyncio.gather(*tasks, return_exceptions=True)


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
    consumer.connect("127.0.0.1", broker.port)
    consumer.subscribe("em/v1/dev/+/up", qos=1)
    consumer.loop_start()
    stop = threading.Event()

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
                with conn.cursor().copy("COPY fixes FROM STDIN") as copy:
                    for m in batch:
                        device = m.topic.split("/")[3]
                        for f in json.loads(m.payload)["fixes"]:
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
                for device, upto in uptos.items():
                    consumer.publish(
                        f"em/v1/dev/{device}/ack", json.dumps({"upto": upto}), qos=1, retain=True
                    )
                for m in batch:
                    consumer.ack(m.mid, 1)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    fleet = Fleet(broker.port, ids, args.per_upload)
    start = time.monotonic()
    made = fleet.run(args.seconds, args.rate, 0.0)
    done = fleet.wait_acked(120)
    fleet.close()
    stop.set()
    thread.join(10)
    consumer.loop_stop()
    consumer.disconnect()
    print(
        f"baseline   {made:>8} fixes acknowledged in {done - start:6.1f} s"
        f" = {made / (done - start):8,.0f} fixes/s (offered {args.rate}/s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--rate", type=float, default=2000, help="fixes per second offered")
    ap.add_argument("--clients", type=int, default=200, help="websocket operator clients")
    ap.add_argument("--per-upload", type=int, default=10)
    ap.add_argument(
        "--violating",
        type=float,
        default=0.05,
        help="share of devices outside their radius (each raises an alert)",
    )
    ap.add_argument(
        "--profile",
        metavar="FILE",
        help="record the service with py-spy while the fleet runs (a flame graph SVG)",
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    work.chmod(0o755)
    pg, broker = Postgres(work / "pg"), Mosquitto(work / "mq")
    pg.start()
    broker.start()
    ids = [f"BP-{i:05d}" for i in range(args.devices)]
    try:
        baseline(pg, broker, ids, args)
        service = Monitor(
            {
                "MONITOR_DATABASE_URL": pg.url,
                "MONITOR_MQTT_URL": f"mqtt://127.0.0.1:{broker.port}",
                "MONITOR_ADMIN_PASSWORD": "bench-admin",
                "MONITOR_LOG_LEVEL": "WARNING",
                "MONITOR_INSTANCE": "bench-svc",
            },
            work / "svc",
        )
        service.start()
        try:
            api = Api.login(service.base_url, "admin", "bench-admin")
            for i, device in enumerate(ids):
                sid = api.subject(f"BENCH-{i:05d}")
                api.put(
                    f"/api/v1/subjects/{sid}/status",
                    {
                        "status": "yellow",
                        "home": list(HOME),
                        "effective_at": "2026-01-01T00:00:00Z",
                    },
                )
                api.enrol(device, sid, signed=False, assigned_at="2026-01-01T00:00:00Z")
            operators = Operators(service.base_url, api.token, args.clients)
            operators.wait_ready(120)
            s0, a0 = cpu()
            rows0 = _rows(pg.url)
            fleet = Fleet(broker.port, ids, args.per_upload)
            assert service.proc is not None
            spy = (
                subprocess.Popen(
                    [
                        str(ROOT / ".venv/bin/py-spy"),
                        "record",
                        "-p",
                        str(service.proc.pid),
                        "-o",
                        args.profile,
                        "-d",
                        str(int(args.seconds)),
                        "-r",
                        "50",
                        # Collapsed stacks for a .txt name (readable in a terminal), else SVG.
                        "-f",
                        "raw" if args.profile.endswith(".txt") else "flamegraph",
                    ],
                    stdout=subprocess.DEVNULL,
                )
                if args.profile
                else None
            )
            start = time.monotonic()
            made = fleet.run(args.seconds, args.rate, 900.0, args.violating)
            if spy is not None:
                spy.wait(60)
            done = fleet.wait_acked(300)
            rows1 = _rows(pg.url)
            s1, a1 = cpu()
            time.sleep(2)  # let the last alert events reach the clients
            operators.finish()
            fleet.close()
            lat = operators.latencies
            assert service.proc is not None
            print(
                f"service    {made:>8} fixes acknowledged in {done - start:6.1f} s"
                f" = {made / (done - start):8,.0f} fixes/s (offered {args.rate}/s,"
                f" {args.violating:.0%} of devices violating)"
            )
            print(f"database   {(rows1 - rows0) / (done - start):8,.0f} fix rows/s")
            print(
                f"operators  {args.clients} websocket clients, {operators.events} alert events"
                f" received; fix-to-operator latency p50 {pct(lat, 50) * 1000:.0f} ms,"
                f" p99 {pct(lat, 99) * 1000:.0f} ms, p99.9 {pct(lat, 99.9) * 1000:.0f} ms"
                f" (mean {statistics.fmean(lat) * 1000 if lat else float('nan'):.0f} ms)"
            )
            print(f"memory     service RSS {rss_mb(service.proc.pid):.0f} MiB")
            print(f"machine    CPU steal {100 * (s1 - s0) / max(1, a1 - a0):.1f} %")
        finally:
            service.stop()
    finally:
        broker.stop()
        pg.stop()


def _rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM fixes").fetchone()
        return int(row[0]) if row else 0


if __name__ == "__main__":
    main()
