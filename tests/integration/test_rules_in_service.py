"""The rule engine inside the running service: a late backlog arriving in small uploads
still confirms its violation; spoofed jumps are flagged; a device that goes silent
raises a comms loss that clears when it talks again."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from geofences.geodesy import offset
from tests.client import Api
from tests.conftest import ADMIN_PASSWORD
from tests.servers import Monitor, Mosquitto, wait_for

pytestmark = pytest.mark.integration

HOME = (76.889709, 43.238949)


@pytest.fixture
def lively(database_url: str, mosquitto: Mosquitto, workdir: Path) -> Iterator[Monitor]:
    service = Monitor(
        {
            "MONITOR_DATABASE_URL": database_url,
            "MONITOR_MQTT_URL": f"mqtt://127.0.0.1:{mosquitto.port}",
            "MONITOR_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "MONITOR_INSTANCE": "monitor-rules",
            "MONITOR_COMMS_BUFFER_S": "1",
            "MONITOR_LIVENESS_EVERY_TICKS": "1",
        },
        workdir / "rules",
    )
    service.start()
    yield service
    service.stop()


class Device:
    def __init__(self, device_id: str, port: int) -> None:
        self.device_id = device_id
        self.seq = 0
        self.acks: list[int] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5
        )
        self.client.on_message = lambda _c, _u, m: self.acks.append(json.loads(m.payload)["upto"])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(f"em/v1/dev/{device_id}/ack", qos=1)

    def fixes(
        self, points: list[tuple[int, float, float]], acc: float = 5.0, batt: int | None = None
    ) -> None:
        """(t_ms, east_m, north_m) from home, one upload."""
        records = []
        for t, east, north in points:
            self.seq += 1
            lon, lat = offset(HOME[0], HOME[1], east, north)
            record = {"seq": self.seq, "t": t, "lat": lat, "lon": lon, "acc": acc, "src": "gnss"}
            if batt is not None:
                record["batt"] = batt
            records.append(record)
        self.client.publish(
            f"em/v1/dev/{self.device_id}/up", json.dumps({"fixes": records}), qos=1
        ).wait_for_publish(10)
        wait_for(lambda: self.seq in self.acks, 30, f"ack {self.seq}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _kinds(api: Api, subject: str) -> dict[str, dict[str, object]]:
    return {a["kind"]: a for a in api.get("/api/v1/alerts", subject_id=subject)["items"]}


def _setup(api: Api, external_id: str, device_id: str) -> str:
    subject = api.subject(external_id)
    api.put(
        f"/api/v1/subjects/{subject}/status",
        {"status": "yellow", "home": list(HOME), "effective_at": "2026-01-01T00:00:00Z"},
    )
    api.enrol(device_id, subject, signed=False, assigned_at="2026-01-01T00:00:00Z")
    return subject


def test_a_late_backlog_in_small_uploads_confirms(lively: Monitor, mosquitto: Mosquitto) -> None:
    api = Api.login(lively.base_url, "admin", ADMIN_PASSWORD)
    subject = _setup(api, "LATE-1", "BR-LATE")
    device = Device("BR-LATE", mosquitto.port)
    now = int(datetime.now(UTC).timestamp() * 1000)
    hour_ago = now - 3_600_000
    try:
        device.fixes([(now - 10_000, 0, 0)])  # live: at home now
        # An hour-old walk outside the radius, uploaded one fix at a time.
        for i in range(4):
            device.fixes([(hour_ago + i * 30_000, 800, 0)])
        wait_for(lambda: "zone_exit" in _kinds(api, subject), 30, "the late zone_exit")
        alert = _kinds(api, subject)["zone_exit"]
        assert alert["fix_time"] == datetime.fromtimestamp(hour_ago / 1000, UTC).isoformat(
            timespec="milliseconds"
        ).replace("+00:00", "Z")
        assert alert["detail"]["late"] is True
        # Both times are on the record: received long after the fix.
        received = datetime.fromisoformat(str(alert["received_at"]).replace("Z", "+00:00"))
        assert (received.timestamp() * 1000) - hour_ago > 3_000_000
    finally:
        device.close()


def test_spoofed_jumps_are_flagged(lively: Monitor, mosquitto: Mosquitto) -> None:
    api = Api.login(lively.base_url, "admin", ADMIN_PASSWORD)
    subject = _setup(api, "SPOOF-1", "BR-SPOOF")
    device = Device("BR-SPOOF", mosquitto.port)
    now = int(datetime.now(UTC).timestamp() * 1000) - 60_000
    try:
        # 30 km in 10 s, and back: no bracelet wearer moves at 3,000 m/s.
        device.fixes([(now, 0, 0), (now + 10_000, 30_000, 0), (now + 20_000, 0, 0)])
        wait_for(lambda: "spoofing" in _kinds(api, subject), 30, "the spoofing alert")
        spoof = _kinds(api, subject)["spoofing"]
        assert spoof["severity"] == "serious"
        assert spoof["detail"]["problem"] == "impossible_speed"
    finally:
        device.close()


def test_silence_is_a_comms_loss_until_the_device_talks(
    lively: Monitor, mosquitto: Mosquitto
) -> None:
    api = Api.login(lively.base_url, "admin", ADMIN_PASSWORD)
    subject = _setup(api, "QUIET-1", "BR-QUIET")
    device = Device("BR-QUIET", mosquitto.port)
    try:
        # A 2 s upload interval, set by command and answered by the device itself.
        command = api.post(
            "/api/v1/devices/BR-QUIET/commands",
            {"cmd": "set_interval", "args": {"fix_s": 2, "upload_s": 2}},
        )
        device.seq += 1
        result = {
            "events": [
                {
                    "seq": device.seq,
                    "t": int(datetime.now(UTC).timestamp() * 1000),
                    "kind": "cmd_result",
                    "detail": {"id": command["id"], "ok": True},
                }
            ]
        }
        device.client.publish("em/v1/dev/BR-QUIET/up", json.dumps(result), qos=1).wait_for_publish(
            10
        )
        wait_for(lambda: "comms_loss" in _kinds(api, subject), 30, "the comms loss")
        assert _kinds(api, subject)["comms_loss"]["detail"].get("cleared_at") is None
        device.fixes([(int(datetime.now(UTC).timestamp() * 1000) - 500, 0, 0)])
        wait_for(
            lambda: _kinds(api, subject)["comms_loss"]["detail"].get("cleared_at"),
            30,
            "the comms loss cleared",
        )
    finally:
        device.close()


def _counter(api: Api, name: str) -> int:
    for line in api.http.get("/metrics").text.splitlines():
        if line.startswith(f"monitor_{name}_total "):
            return int(line.split()[1])
    return 0


def test_a_device_judged_quiet_is_judged_again_when_its_battery_falls(
    lively: Monitor, mosquitto: Mosquitto
) -> None:
    """Liveness leaves a device it judged quiet alone until the earliest time comms or
    location could be lost, even while it keeps uploading. A fix at the critical battery
    level can open an alert sooner than that: it must be judged at the next pass."""
    api = Api.login(lively.base_url, "admin", ADMIN_PASSWORD)
    subject = _setup(api, "BATT-1", "BR-BATT")
    device = Device("BR-BATT", mosquitto.port)
    try:
        device.fixes([(int(datetime.now(UTC).timestamp() * 1000), 0, 0)], batt=80)
        # Two passes after that fix: the first judges the device and finds it quiet for
        # its upload interval (a minute), the second skips it.
        passes = _counter(api, "liveness_passes")
        wait_for(lambda: _counter(api, "liveness_passes") >= passes + 2, 30, "two passes")
        device.fixes([(int(datetime.now(UTC).timestamp() * 1000), 0, 0)], batt=60)
        assert "battery" not in _kinds(api, subject)
        device.fixes([(int(datetime.now(UTC).timestamp() * 1000), 0, 0)], batt=5)
        wait_for(lambda: "battery" in _kinds(api, subject), 20, "the battery alert")
        assert "comms_loss" not in _kinds(api, subject)
    finally:
        device.close()


def test_approaching_a_victims_phone_raises_proximity(
    lively: Monitor, mosquitto: Mosquitto
) -> None:
    api = Api.login(lively.base_url, "admin", ADMIN_PASSWORD)
    subject = _setup(api, "PROX-1", "BR-PROX")
    protected = api.subject("VICTIM-1", name="Protected person")
    api.enrol("PH-VICTIM", protected, signed=False, assigned_at="2026-01-01T00:00:00Z")
    api.post(
        f"/api/v1/subjects/{subject}/proximity-rules",
        {"device_id": "PH-VICTIM", "distance_m": 300, "valid_from": "2026-01-01T00:00:00Z"},
    )
    bad = api.http.post(
        f"/api/v1/subjects/{subject}/proximity-rules",
        json={"device_id": "NOBODY-1", "distance_m": 300},
    )
    assert bad.status_code == 422
    aggressor = Device("BR-PROX", mosquitto.port)
    victim = Device("PH-VICTIM", mosquitto.port)
    now = int(datetime.now(UTC).timestamp() * 1000) - 120_000
    try:
        aggressor.fixes([(now, 0, 0)])  # at home
        victim.fixes([(now + 1000, 2000, 0)])  # 2 km away: compliant
        assert "proximity" not in _kinds(api, subject)
        # The victim's phone stays put; the subject walks up to it: each of his fixes is
        # judged against her latest.
        for i in range(4):
            aggressor.fixes([(now + 10_000 + i * 10_000, 1900, 0)])
        wait_for(lambda: "proximity" in _kinds(api, subject), 30, "the proximity alert")
        alert = _kinds(api, subject)["proximity"]
        assert alert["severity"] == "critical"
        assert alert["device_id"] == "BR-PROX"
    finally:
        aggressor.close()
        victim.close()


AIRPORT = {  # a box around Almaty airport, [lon, lat]
    "type": "Feature",
    "geometry": {
        "type": "Polygon",
        "coordinates": [
            [[77.02, 43.34], [77.06, 43.34], [77.06, 43.36], [77.02, 43.36], [77.02, 43.34]]
        ],
    },
    "properties": {"kind": "exclusion", "name": "ALA airport", "tags": ["negative_test_required"]},
}


def test_blue_keeps_out_of_shared_zones_that_need_a_negative_test(
    lively: Monitor, mosquitto: Mosquitto
) -> None:
    api = Api.login(lively.base_url, "admin", ADMIN_PASSWORD)
    bad = {
        "type": "FeatureCollection",
        "features": [
            AIRPORT,
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [400, 43]},
                "properties": {"kind": "exclusion"},
            },
        ],
    }
    refused = api.http.post("/api/v1/zone-sets/airports/import", content=json.dumps(bad).encode())
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["feature"] == 1
    stored = api.http.post(
        "/api/v1/zone-sets/airports/import",
        content=json.dumps({"type": "FeatureCollection", "features": [AIRPORT]}).encode(),
    )
    assert stored.status_code == 201, stored.text
    assert len(api.get("/api/v1/zone-sets/airports/zones")["features"]) == 1

    subject = api.subject("BLUE-1")
    api.put(
        f"/api/v1/subjects/{subject}/status",
        {"status": "blue", "effective_at": "2026-01-01T00:00:00Z"},
    )
    api.enrol("BR-BLUE", subject, signed=False, assigned_at="2026-01-01T00:00:00Z")
    device = Device("BR-BLUE", mosquitto.port)
    # After the zone set was recorded: each fix is judged by the rules of its own time.
    t = int(datetime.now(UTC).timestamp() * 1000)
    try:
        # (east, north) of HOME that lands inside the airport box, three fixes.
        device.fixes([(t + i * 1000, 12_700, 12_000) for i in range(3)])
        wait_for(lambda: "zone_enter" in _kinds(api, subject), 30, "the airport zone_enter")
    finally:
        device.close()


def test_a_proximity_episode_open_at_a_restart_is_one_alert_and_clears(
    lively: Monitor, mosquitto: Mosquitto
) -> None:
    """The episode's state was only in the killed process's memory: the new process
    reads it back from the open alert, so the subject still near the victim adds to
    that alert rather than opening a second, and walking away clears it."""
    api = Api.login(lively.base_url, "admin", ADMIN_PASSWORD)
    subject = _setup(api, "PROX-2", "BR-PROX2")
    protected = api.subject("VICTIM-2", name="Protected person")
    api.enrol("PH-VICTIM2", protected, signed=False, assigned_at="2026-01-01T00:00:00Z")
    api.post(
        f"/api/v1/subjects/{subject}/proximity-rules",
        {"device_id": "PH-VICTIM2", "distance_m": 300, "valid_from": "2026-01-01T00:00:00Z"},
    )
    now = int(datetime.now(UTC).timestamp() * 1000) - 300_000
    aggressor = Device("BR-PROX2", mosquitto.port)
    victim = Device("PH-VICTIM2", mosquitto.port)
    try:
        victim.fixes([(now, 2000, 0)])
        for i in range(4):
            aggressor.fixes([(now + 10_000 + i * 10_000, 1900, 0)])
        wait_for(lambda: "proximity" in _kinds(api, subject), 30, "the proximity alert")
    finally:
        aggressor.close()
        victim.close()
    lively.stop(signal.SIGKILL)
    lively.start()
    api = Api.login(lively.base_url, "admin", ADMIN_PASSWORD)
    aggressor = Device("BR-PROX2", mosquitto.port)
    aggressor.seq = 4
    try:
        for i in range(4):
            aggressor.fixes([(now + 60_000 + i * 10_000, 1900, 0)])  # still near her
        aggressor.fixes([(now + 120_000, 0, 0)])  # back home, 2 km from her
        items = api.get("/api/v1/alerts", subject_id=subject)["items"]
        wait_for(
            lambda: (
                [
                    a["detail"].get("cleared_at") is not None
                    for a in api.get("/api/v1/alerts", subject_id=subject)["items"]
                    if a["kind"] == "proximity"
                ]
                == [True]
            ),
            30,
            "one proximity alert, cleared",
        )
        items = api.get("/api/v1/alerts", subject_id=subject)["items"]
        assert [a["kind"] for a in items].count("proximity") == 1
    finally:
        aggressor.close()


def test_a_violation_going_on_after_its_alert_was_resolved_opens_a_new_alert(
    lively: Monitor, mosquitto: Mosquitto
) -> None:
    """Contract: a resolved alert is never changed again by fixes, and the next violating
    fix opens a new alert. Before, later fixes were dropped against the resolved alert and
    the episode stayed open in memory: the violation went on unseen."""
    api = Api.login(lively.base_url, "admin", ADMIN_PASSWORD)
    subject = _setup(api, "RESOLVED-1", "BR-RES1")
    device = Device("BR-RES1", mosquitto.port)
    now = int(datetime.now(UTC).timestamp() * 1000) - 600_000
    try:
        for i in range(3):
            device.fixes([(now + i * 10_000, 900, 0)])  # 900 m out of a 500 m radius
        wait_for(lambda: "zone_exit" in _kinds(api, subject), 30, "the zone_exit alert")
        first = _kinds(api, subject)["zone_exit"]
        api.post(f"/api/v1/alerts/{first['id']}/resolve", {"note": "spoke to him"}, expect=200)
        resolved = api.get("/api/v1/alerts", subject_id=subject)["items"][0]
        # The violation goes on: 20 s later (past the update throttle) and beyond.
        for i in range(3):
            device.fixes([(now + 60_000 + i * 10_000, 950, 0)])

        def alerts() -> list[dict[str, object]]:
            items = api.get("/api/v1/alerts", subject_id=subject)["items"]
            return [a for a in items if a["kind"] == "zone_exit"]

        wait_for(lambda: len(alerts()) == 2, 30, "a second zone_exit alert")
        newest, oldest = alerts()
        assert newest["state"] == "open"
        assert newest["id"] != first["id"]
        assert oldest["id"] == first["id"]
        assert oldest["state"] == "resolved"
        assert oldest["event_id"] == resolved["event_id"]  # never changed again
        # Later fixes go to the new alert, not to a third one.
        device.fixes([(now + 120_000, 950, 0)])
        device.fixes([(now + 130_000, 950, 0)])
        assert len(alerts()) == 2
    finally:
        device.close()
