"""The alert lifecycle across processes: escalation of unacknowledged critical alerts,
planned suspensions, configurable severities, and an alert committed by the ingesting
process reaching an operator connected to another process."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from geofences.geodesy import offset
from tests.client import Api, LiveAlerts
from tests.conftest import ADMIN_PASSWORD
from tests.servers import Monitor, Mosquitto, wait_for

pytestmark = pytest.mark.integration


def _two_processes(
    database_url: str, mosquitto: Mosquitto, workdir: Path, name: str, settings: dict[str, str]
) -> Iterator[tuple[Monitor, Monitor]]:
    """Two processes on one database: one ingests, one serves the API only."""
    common = {
        "MONITOR_DATABASE_URL": database_url,
        "MONITOR_MQTT_URL": f"mqtt://127.0.0.1:{mosquitto.port}",
        "MONITOR_ADMIN_PASSWORD": ADMIN_PASSWORD,
        **settings,
    }
    ingesting = Monitor({**common, "MONITOR_INSTANCE": f"{name}-ingest"}, workdir / f"{name}1")
    serving = Monitor(
        {**common, "MONITOR_INSTANCE": f"{name}-api", "MONITOR_INGEST": "false"},
        workdir / f"{name}2",
    )
    ingesting.start()
    serving.start()
    yield ingesting, serving
    serving.stop()
    ingesting.stop()


@pytest.fixture
def pair(
    database_url: str, mosquitto: Mosquitto, workdir: Path
) -> Iterator[tuple[Monitor, Monitor]]:
    yield from _two_processes(
        database_url,
        mosquitto,
        workdir,
        "lifecycle",
        {"MONITOR_ESCALATE_AFTER_S": "2", "MONITOR_SEVERITY__BATTERY": "warning"},
    )


@pytest.fixture
def lively_pair(
    database_url: str, mosquitto: Mosquitto, workdir: Path
) -> Iterator[tuple[Monitor, Monitor]]:
    """The two processes judging silence every 2 s, with a 1-s comms buffer."""
    yield from _two_processes(
        database_url,
        mosquitto,
        workdir,
        "lively",
        {"MONITOR_COMMS_BUFFER_S": "1", "MONITOR_LIVENESS_EVERY_TICKS": "1"},
    )


def _events(port: int, device_id: str, events: list[dict[str, object]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(
        f"em/v1/dev/{device_id}/up", json.dumps({"events": events}), qos=1
    ).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def test_lifecycle_across_two_processes(
    pair: tuple[Monitor, Monitor], mosquitto: Mosquitto
) -> None:
    _, serving = pair
    api = Api.login(serving.base_url, "admin", ADMIN_PASSWORD)
    subject = api.subject("LC-1")
    quiet = api.subject("LC-2")
    api.enrol("BR-LC1", subject, signed=False, assigned_at="2026-01-01T00:00:00Z")
    api.enrol("BR-LC2", quiet, signed=False, assigned_at="2026-01-01T00:00:00Z")
    now = datetime.now(UTC)
    api.post(
        f"/api/v1/subjects/{quiet}/suspensions",
        {
            "starts_at": (now - timedelta(hours=1)).isoformat(),
            "ends_at": (now + timedelta(hours=1)).isoformat(),
            "reason": "hospital stay",
        },
    )

    live = LiveAlerts(serving.base_url, api.token)  # on the process that does not ingest
    assert live.next()["type"] == "snapshot"
    t = int(now.timestamp() * 1000) - 5000
    _events(mosquitto.port, "BR-LC2", [{"seq": 1, "t": t, "kind": "strap_open"}])
    _events(
        mosquitto.port,
        "BR-LC1",
        [
            {"seq": 1, "t": t, "kind": "strap_open"},
            {"seq": 2, "t": t + 1, "kind": "battery_critical"},
        ],
    )

    tamper = live.wait_for(lambda m: m["type"] == "alert" and m["alert"]["kind"] == "tamper", 30)[
        "alert"
    ]
    assert tamper["subject_id"] == subject  # the suspended subject's alert is not pushed
    battery = live.wait_for(lambda m: m["alert"]["kind"] == "battery", 30)["alert"]
    assert battery["severity"] == "warning"  # configured
    escalated = live.wait_for(
        lambda m: m["alert"]["id"] == tamper["id"] and "escalated_at" in m["alert"]["detail"], 30
    )["alert"]
    assert escalated["detail"]["escalation_level"] >= 1
    assert escalated["event_id"] > tamper["event_id"]
    live.close()

    # The suspended subject's alert is recorded all the same, marked as such.
    recorded = api.get("/api/v1/alerts", subject_id=quiet)["items"]
    assert [a["kind"] for a in recorded] == ["tamper"]
    assert recorded[0]["detail"]["suspended"]["reason"] == "hospital stay"
    assert "escalated_at" not in recorded[0]["detail"]


def test_only_the_ingesting_process_judges_silence(
    lively_pair: tuple[Monitor, Monitor], mosquitto: Mosquitto, database_url: str
) -> None:
    """A process that serves only hears no device: were it to judge silence, it would
    open a comms_loss for every device, talking or not."""
    _, serving = lively_pair
    api = Api.login(serving.base_url, "admin", ADMIN_PASSWORD)
    talking = api.subject("LV-TALK")
    silent = api.subject("LV-SILENT")
    api.enrol("BR-LV-TALK", talking, signed=False, assigned_at="2026-01-01T00:00:00Z")
    api.enrol("BR-LV-SILENT", silent, signed=False, assigned_at="2026-01-01T00:00:00Z")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="BR-LV-TALK", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        # Talk every half second for 8 s: four liveness judgments in each process.
        for seq in range(1, 17):
            t = int(datetime.now(UTC).timestamp() * 1000)
            fix = {"seq": seq, "t": t, "lat": 43.2389, "lon": 76.8897, "acc": 5, "src": "gnss"}
            client.publish(
                "em/v1/dev/BR-LV-TALK/up", json.dumps({"fixes": [fix]}), qos=1
            ).wait_for_publish(10)
            if seq == 1:
                # Both devices upload every second from now on, as far as the service
                # knows: silence is then 2 s (1 s and the 1-s buffer), not 61 s. Every
                # process reloads a device on NOTIFY devices.
                with psycopg.connect(database_url, autocommit=True) as conn:
                    conn.execute(
                        "UPDATE devices SET upload_interval_s = 1, fix_interval_s = 1"
                        " WHERE device_id IN ('BR-LV-TALK', 'BR-LV-SILENT')"
                    )
                    conn.execute("SELECT pg_notify('devices', 'BR-LV-TALK')")
                    conn.execute("SELECT pg_notify('devices', 'BR-LV-SILENT')")
            time.sleep(0.5)  # the device's own pace, not a wait for the service
    finally:
        client.loop_stop()
        client.disconnect()

    def comms_losses(subject: str) -> list[dict[str, object]]:
        items = api.get("/api/v1/alerts", subject_id=subject)["items"]
        return [a for a in items if a["kind"] == "comms_loss"]

    # The silent device's loss is opened once, by the ingesting process alone.
    assert len(comms_losses(silent)) == 1
    # The talking device may have been judged silent once if the ingesting process fell
    # more than 2 s behind; any such loss is cleared, and none stays open.
    assert all(
        isinstance(a["detail"], dict) and a["detail"].get("cleared_at")
        for a in comms_losses(talking)
    ), comms_losses(talking)


def test_a_backdated_status_set_on_the_serving_process_judges_stored_fixes(
    pair: tuple[Monitor, Monitor], mosquitto: Mosquitto
) -> None:
    """A status dated in the past, set through a process that does not ingest, reaches
    the ingesting process whole (NOTIFY rules carries `since` and the new rule keys):
    it judges the fixes stored since then and opens the zone_exit they show."""
    _, serving = pair
    api = Api.login(serving.base_url, "admin", ADMIN_PASSWORD)
    subject = api.subject("LC-BACK")
    api.enrol("BR-LC-BACK", subject, signed=False, assigned_at="2026-01-01T00:00:00Z")
    home = (76.889709, 43.238949)
    lon, lat = offset(home[0], home[1], 900, 0)
    acks: list[int] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="BR-LC-BACK", protocol=mqtt.MQTTv5)
    client.on_message = lambda _c, _u, m: acks.append(json.loads(m.payload)["upto"])
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        client.subscribe("em/v1/dev/BR-LC-BACK/ack", qos=1)
        now = datetime.now(UTC)
        t0 = int(now.timestamp() * 1000) - 60_000
        fixes = [
            {"seq": i, "t": t0 + i * 10_000, "lat": lat, "lon": lon, "acc": 5, "src": "gnss"}
            for i in (1, 2, 3)
        ]
        client.publish(
            "em/v1/dev/BR-LC-BACK/up", json.dumps({"fixes": fixes}), qos=1
        ).wait_for_publish(10)
        wait_for(lambda: 3 in acks, 30, "the fixes stored")
    finally:
        client.loop_stop()
        client.disconnect()
    assert api.get("/api/v1/alerts", subject_id=subject)["items"] == []  # no rule yet

    api.put(
        f"/api/v1/subjects/{subject}/status",
        {
            "status": "yellow",
            "home": list(home),
            "effective_at": (now - timedelta(minutes=10)).isoformat(),
        },
    )
    wait_for(
        lambda: any(
            a["kind"] == "zone_exit" for a in api.get("/api/v1/alerts", subject_id=subject)["items"]
        ),
        30,
        "the zone_exit judged from the stored fixes",
    )
