"""A transfer takes the subject out of the old officer's reach at once, the live feed
included, and into the new officer's."""

from __future__ import annotations

import json
import queue
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.client import REASON, Api, LiveAlerts
from tests.conftest import ADMIN_PASSWORD
from tests.servers import Monitor, Mosquitto

pytestmark = pytest.mark.integration


def _officer(admin: Api, base: str, name: str) -> Api:
    admin.post(
        "/api/v1/users", {"username": name, "password": f"{name}-secret-pw", "role": "officer"}
    )
    return Api.login(base, name, f"{name}-secret-pw")


def _strap_open(port: int, device_id: str, seq: int) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    t = int(datetime.now(UTC).timestamp() * 1000) - 1000
    body = {"events": [{"seq": seq, "t": t, "kind": "strap_open"}]}
    client.publish(f"em/v1/dev/{device_id}/up", json.dumps(body), qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def test_a_transfer_moves_the_live_feed_at_once(monitor: Monitor, mosquitto: Mosquitto) -> None:
    admin = Api.login(monitor.base_url, "admin", ADMIN_PASSWORD)
    old = _officer(admin, monitor.base_url, "officer_old")
    new = _officer(admin, monitor.base_url, "officer_new")
    subject = admin.post(
        "/api/v1/subjects",
        {
            "name": "Moved",
            "external_id": "XFER-1",
            "timezone": "Asia/Almaty",
            "officer": "officer_old",
        },
    )["id"]
    admin.enrol("BR-XFER", subject, signed=False, assigned_at="2026-01-01T00:00:00Z")
    old_feed = LiveAlerts(monitor.base_url, old.token)
    new_feed = LiveAlerts(monitor.base_url, new.token)
    assert old_feed.next()["type"] == "snapshot"
    assert new_feed.next()["type"] == "snapshot"

    transfer = admin.http.patch(f"/api/v1/subjects/{subject}", json={"officer": "officer_new"})
    assert transfer.status_code == 200
    assert old.http.get(f"/api/v1/subjects/{subject}", headers=REASON).status_code == 404
    assert new.get(f"/api/v1/subjects/{subject}")["officer"] == "officer_new"

    _strap_open(mosquitto.port, "BR-XFER", 1)
    pushed = new_feed.wait_for(lambda m: m["type"] == "alert", 30)
    assert pushed["alert"]["subject_id"] == subject
    # The old officer's feed stays silent: give it the same event's worth of time.
    with pytest.raises(queue.Empty):
        old_feed.next(timeout=2)
    old_feed.close()
    new_feed.close()
