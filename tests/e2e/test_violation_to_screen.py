"""One violation from a bracelet to an operator's screen, through real servers:
device_sim (MQTT 5, QoS 1, signed) → Mosquitto → monitor serve → TimescaleDB →
websocket, and the retained ack back to the device."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import psycopg
import pytest

from device_sim.device import Bracelet
from geofences.geodesy import offset
from tests.client import Api, LiveAlerts
from tests.conftest import ADMIN_PASSWORD
from tests.servers import Monitor, Mosquitto

pytestmark = pytest.mark.e2e

HOME = (76.889709, 43.238949)  # Almaty, [lon, lat]


def test_leaving_the_500m_radius_reaches_the_operator(
    monitor: Monitor, mosquitto: Mosquitto, database_url: str
) -> None:
    api = Api.login(monitor.base_url, "admin", ADMIN_PASSWORD)
    subject_id = api.subject("IIN-900101300001")
    an_hour_ago = datetime.fromtimestamp(time.time() - 3600, UTC).isoformat()
    api.put(
        f"/api/v1/subjects/{subject_id}/status",
        {"status": "yellow", "home": list(HOME), "effective_at": an_hour_ago},
    )
    creds = api.enrol("BR-0001", subject_id, signed=True, assigned_at=an_hour_ago)
    assert creds["mqtt_username"] == "BR-0001"
    assert len(creds["signing_key"]) == 43

    live = LiveAlerts(monitor.base_url, api.token)
    snapshot = live.next()
    assert snapshot["type"] == "snapshot"
    assert snapshot["alerts"] == []

    device = Bracelet(
        "BR-0001",
        "127.0.0.1",
        mosquitto.port,
        creds["mqtt_username"],
        creds["mqtt_password"],
        signing_key=creds["signing_key"],
        fix_interval_s=1,
        upload_interval_s=0.2,
    )
    device.connect()
    try:
        now_ms = int(datetime.now(UTC).timestamp() * 1000) - 120_000  # 2 min ago
        track = [(0, 0)] * 2 + [(700, 0)] * 5  # two fixes at home, then 700 m east
        for i, (east, north) in enumerate(track):
            lon, lat = offset(HOME[0], HOME[1], east, north)
            device.add_fix(now_ms + i * 10_000, lat, lon, acc=8.5)
        assert device.flush(30)
        assert device.wait_acked(30), f"acked up to {device.acked_upto} of {device.last_seq}"
    finally:
        device.close()

    msg = live.wait_for(lambda m: m["type"] == "alert", timeout=30)
    alert = msg["alert"]
    assert alert["kind"] == "zone_exit"
    assert alert["subject_id"] == subject_id
    assert alert["device_id"] == "BR-0001"
    assert alert["severity"] == "critical"
    assert alert["state"] == "open"
    first_out = datetime.fromtimestamp((now_ms + 2 * 10_000) / 1000, UTC)
    assert alert["fix_time"] == first_out.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    live.close()

    # The fixes are in the hypertable, and in the API as GeoJSON, oldest first.
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT seq) FROM fixes WHERE device_id = 'BR-0001'"
        ).fetchone()
        assert row == (7, 7)
        hyper = conn.execute(
            "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = 'fixes'"
        ).fetchone()
        assert hyper is not None
    # The exit is on the record as a transition too, at the first fix outside.
    moves = api.get(f"/api/v1/subjects/{subject_id}/transitions")["items"]
    assert [(m["event"], m["seq"]) for m in moves] == [("exit", 3)]
    fixes = api.get(f"/api/v1/subjects/{subject_id}/fixes")
    assert [f["properties"]["seq"] for f in fixes["features"]] == list(range(1, 8))

    # The alert list agrees, and a client resuming from 0 gets the alert's events again.
    listed = api.get("/api/v1/alerts", subject_id=subject_id)
    assert [a["id"] for a in listed["items"]] == [alert["id"]], json.dumps(listed, indent=1)
    resumed = LiveAlerts(monitor.base_url, api.token, after=0)
    first = resumed.next()
    assert first["type"] == "alert"
    assert first["alert"]["id"] == alert["id"]
    resumed.close()


def test_health_answers_once_ready(monitor: Monitor) -> None:
    import httpx

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = httpx.get(f"{monitor.base_url}/healthz")
        if r.status_code == 200:
            assert r.json()["database"]
            assert r.json()["broker"]
            return
        time.sleep(0.1)
    raise AssertionError("healthz never answered 200")
