"""A silent fleet: every enrolled device stops reporting at once (a broker outage, a
network down, a fleet switched off). Measures how long the service takes to open one
comms_loss alert per device, and how the operator API answers meanwhile.

    .venv/bin/python bench/silence.py [--devices 100000] [--upload-interval 30]

Devices are enrolled as in bench/pipeline.py (one through the API, the rest cloned in
SQL), the service is restarted (silence counts from its start), and no device ever
reports: each is due its comms_loss at start + upload interval + the comms buffer
(MONITOR_COMMS_BUFFER_S, 10 s here), and liveness runs every tick (2 s). No assertions:
figures only. Loopback only; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import stack  # noqa: E402
from bench.pipeline import enrol  # noqa: E402
from tests.client import Api  # noqa: E402
from tests.servers import wait_for  # noqa: E402

BUFFER_S = 10


def _alerts(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM alerts WHERE kind = 'comms_loss'").fetchone()
    return int(row[0]) if row else 0


def _health_ms(base_url: str) -> float:
    started = time.monotonic()
    with urllib.request.urlopen(f"{base_url}/healthz", timeout=30) as answer:
        answer.read()
    return (time.monotonic() - started) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--upload-interval", type=float, default=30.0, help="seconds")
    ap.add_argument("--timeout", type=float, default=900.0, help="give up after (s)")
    args = ap.parse_args()
    work, pg, broker = stack.servers("bench-silence-")
    service = stack.service(
        work,
        pg,
        broker,
        {"MONITOR_COMMS_BUFFER_S": str(BUFFER_S), "MONITOR_LIVENESS_EVERY_TICKS": "1"},
    )
    try:
        service.start()
        api = Api.login(service.base_url, "admin", stack.ADMIN_PASSWORD)
        enrol(pg, api, args.devices, 10.0, args.upload_interval)
        service.stop()
        started = time.monotonic()
        service.start(wait_healthy=False)
        wait_for(service.healthy, 600, "the service after its restart", 0.2)
        due = started + args.upload_interval + BUFFER_S
        print(
            f"silence    {args.devices:,} devices enrolled, none reporting; each due its"
            f" comms_loss {args.upload_interval + BUFFER_S:.0f} s after the service started"
        )
        first = last = None
        health: list[float] = []
        count = 0
        while time.monotonic() - started < args.timeout:
            health.append(_health_ms(service.base_url))
            count = _alerts(pg.url)
            now = time.monotonic()
            if count and first is None:
                first = now
            if count >= args.devices:
                last = now
                break
            time.sleep(0.5)
        if first is None or last is None:
            print(
                f"alerts     {count:,} of {args.devices:,} comms_loss alerts"
                f" in {args.timeout:.0f} s"
            )
        else:
            print(
                f"alerts     {count:,} comms_loss alerts: the first {first - due:+.1f} s from due,"
                f" all {last - due:+.1f} s from due ({count / max(last - first, 0.5):,.0f}"
                " alerts/s once they began)"
            )
        print(
            f"healthz    {len(health)} calls meanwhile: median {statistics.median(health):.0f} ms,"
            f" max {max(health):.0f} ms"
        )
    finally:
        service.stop()
        broker.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
