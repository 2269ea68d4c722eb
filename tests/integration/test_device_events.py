"""Device events that mean an alert (tamper, battery, SOS, jamming), sequence holes that
become data gaps, and online/offline from the retained state topic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.client import Api
from tests.conftest import ADMIN_PASSWORD
from tests.servers import Monitor, Mosquitto, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def quick_gaps(database_url: str, mosquitto: Mosquitto, workdir: Path) -> Iterator[Monitor]:
    service = Monitor(
        {
            "MONITOR_DATABASE_URL": database_url,
            "MONITOR_MQTT_URL": f"mqtt://127.0.0.1:{mosquitto.port}",
            "MONITOR_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "MONITOR_INSTANCE": "monitor-events",
            "MONITOR_GAP_TIMEOUT_S": "1",
        },
        workdir / "events",
    )
    service.start()
    yield service
    service.stop()


class Device:
    def __init__(self, device_id: str, port: int) -> None:
        self.device_id = device_id
        self.acks: list[int] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5
        )
        self.client.will_set(
            f"em/v1/dev/{device_id}/state", '{"online": false}', qos=1, retain=True
        )
        self.client.on_message = lambda _c, _u, m: self.acks.append(json.loads(m.payload)["upto"])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(f"em/v1/dev/{device_id}/ack", qos=1)
        self.client.publish(
            f"em/v1/dev/{device_id}/state", '{"online": true}', qos=1, retain=True
        ).wait_for_publish(10)

    def upload(self, fixes: list[dict[str, object]], events: list[dict[str, object]]) -> None:
        body = json.dumps({"fixes": fixes, "events": events})
        self.client.publish(f"em/v1/dev/{self.device_id}/up", body, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _t(offset_s: float = 0) -> int:
    return int(datetime.now(UTC).timestamp() * 1000 - 60_000 + offset_s * 1000)


def _alerts(api: Api, subject: str) -> dict[str, dict[str, object]]:
    return {a["kind"]: a for a in api.get("/api/v1/alerts", subject_id=subject)["items"]}


def test_tamper_battery_and_sos_alerts_with_their_clears(
    quick_gaps: Monitor, mosquitto: Mosquitto
) -> None:
    api = Api.login(quick_gaps.base_url, "admin", ADMIN_PASSWORD)
    subject = api.subject("EV-1")
    api.enrol("BR-EV1", subject, signed=False, assigned_at="2026-01-01T00:00:00Z")
    device = Device("BR-EV1", mosquitto.port)
    try:
        device.upload(
            [],
            [
                {"seq": 1, "t": _t(0), "kind": "strap_open"},
                {"seq": 2, "t": _t(1), "kind": "battery_critical", "detail": {"batt": 3}},
                {"seq": 3, "t": _t(2), "kind": "sos"},
                {"seq": 4, "t": _t(3), "kind": "jamming"},
            ],
        )
        wait_for(lambda: len(_alerts(api, subject)) == 4, 30, "four alerts")
        alerts = _alerts(api, subject)
        assert alerts["tamper"]["severity"] == "critical"
        assert alerts["battery"]["severity"] == "serious"
        # A tamper alert is not resolved while the strap is still open.
        tamper_id = alerts["tamper"]["id"]
        r = api.http.post(f"/api/v1/alerts/{tamper_id}/resolve", json={"note": "checked"})
        assert r.status_code == 409
        device.upload(
            [],
            [
                {"seq": 5, "t": _t(4), "kind": "strap_closed"},
                {"seq": 6, "t": _t(5), "kind": "charger_on"},
            ],
        )
        wait_for(lambda: device.acks[-1:] == [6], 30, "ack upto 6")
        alerts = _alerts(api, subject)
        assert alerts["tamper"]["detail"]["clear_reason"] == "strap closed"
        assert alerts["battery"]["detail"]["clear_reason"] == "charger connected"
        resolved = api.post(
            f"/api/v1/alerts/{tamper_id}/resolve",
            {"note": "strap refitted at the office"},
            expect=200,
        )
        assert resolved["state"] == "resolved"
    finally:
        device.close()


def test_a_hole_open_past_the_timeout_becomes_a_data_gap(
    quick_gaps: Monitor, mosquitto: Mosquitto
) -> None:
    api = Api.login(quick_gaps.base_url, "admin", ADMIN_PASSWORD)
    subject = api.subject("EV-2")
    api.enrol("BR-EV2", subject, signed=False, assigned_at="2026-01-01T00:00:00Z")
    device = Device("BR-EV2", mosquitto.port)
    fix = {"lat": 51.13, "lon": 71.43, "acc": 5.0, "src": "gnss"}
    try:
        device.upload([{"seq": 1, "t": _t(0), **fix}, {"seq": 4, "t": _t(3), **fix}], [])
        wait_for(lambda: 1 in device.acks, 30, "ack upto 1")
        # Seqs 2 and 3 never come: after the gap timeout the watermark moves past them.
        wait_for(lambda: 4 in device.acks, 30, "ack upto 4 past the gap")
        gap = _alerts(api, subject)["data_gap"]
        assert gap["detail"]["first_seq"] == 2
        assert gap["detail"]["last_seq"] == 3
        # A record from inside the gap that arrives late is still stored.
        device.upload([{"seq": 2, "t": _t(1), **fix}], [])
        wait_for(
            lambda: len(api.get(f"/api/v1/subjects/{subject}/fixes")["features"]) == 3,
            30,
            "the late record stored",
        )
    finally:
        device.close()
