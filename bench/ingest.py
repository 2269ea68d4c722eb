"""Ingest throughput through the real pipeline: devices → Mosquitto → monitor serve →
TimescaleDB → retained ack. Prints fixes/s acknowledged, CPU steal and service memory.

    .venv/bin/python bench/ingest.py [--devices 50] [--uploads 20] [--per-upload 100]

A first harness: the fleet, websocket-latency and baseline figures belong to the
benchmark issue. No assertions; figures only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import stack  # noqa: E402
from tests.client import Api  # noqa: E402


def steal() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return fields[7], sum(fields)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--uploads", type=int, default=20)
    ap.add_argument("--per-upload", type=int, default=100)
    args = ap.parse_args()
    work, pg, broker = stack.servers()
    service = stack.service(work, pg, broker)
    service.start()
    try:
        api = Api.login(service.base_url, "admin", stack.ADMIN_PASSWORD)
        ids = []
        for i in range(args.devices):
            sid = api.subject(f"BENCH-{i:05d}")
            api.put(
                f"/api/v1/subjects/{sid}/status",
                {
                    "status": "yellow",
                    "home": [71.43, 51.13],
                    "effective_at": "2026-01-01T00:00:00Z",
                },
            )
            api.enrol(f"BN-{i:05d}", sid, signed=False, assigned_at="2026-01-01T00:00:00Z")
            ids.append(f"BN-{i:05d}")
        acked: dict[str, int] = {}
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-publisher", protocol=mqtt.MQTTv5
        )
        client.max_inflight_messages_set(200)
        client.max_queued_messages_set(0)
        client.on_message = lambda _c, _u, m: acked.__setitem__(
            m.topic.split("/")[3], json.loads(m.payload)["upto"]
        )
        client.connect("127.0.0.1", broker.port)
        client.subscribe("em/v1/dev/+/ack", qos=1)
        client.loop_start()
        total = args.devices * args.uploads * args.per_upload
        t0_ms = int(datetime.now(UTC).timestamp() * 1000) - 3_600_000
        s0, all0 = steal()
        start = time.monotonic()
        for u in range(args.uploads):
            for d in ids:
                fixes = [
                    {
                        "seq": u * args.per_upload + k + 1,
                        "t": t0_ms + (u * args.per_upload + k) * 1000,
                        "lat": 51.13,
                        "lon": 71.43,
                        "acc": 5.0,
                        "src": "gnss",
                    }
                    for k in range(args.per_upload)
                ]
                client.publish(f"em/v1/dev/{d}/up", json.dumps({"fixes": fixes}), qos=1)
        want = args.uploads * args.per_upload
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not all(acked.get(d) == want for d in ids):
            time.sleep(0.05)
        elapsed = time.monotonic() - start
        s1, all1 = steal()
        done = sum(acked.values())
        print(
            f"fixes acknowledged: {done}/{total} in {elapsed:.2f} s = {done / elapsed:,.0f} fixes/s"
            f" ({args.devices} devices, {args.per_upload} fixes per upload, QoS 1)"
        )
        print(f"CPU steal during the run: {100 * (s1 - s0) / max(1, all1 - all0):.1f} %")
        assert service.proc is not None
        print(f"service RSS: {rss_mb(service.proc.pid):.0f} MiB")
        client.loop_stop()
        client.disconnect()
    finally:
        service.stop()
        broker.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
