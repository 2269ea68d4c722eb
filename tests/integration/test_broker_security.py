"""Broker credentials and ACLs generated from the enrolled devices, against a real
Mosquitto: a device publishes only under its own topics, an unknown client cannot
connect, and a device enrolled later can connect without a broker restart."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.client import Api
from tests.servers import Monitor, Mosquitto, wait_for

pytestmark = pytest.mark.integration

ADMIN = "broker-admin-1"


@pytest.fixture
def secured(workdir: Path, database_url: str) -> Iterator[tuple[Mosquitto, Monitor]]:
    base = workdir / f"secured-{secrets.token_hex(4)}"
    broker = Mosquitto(
        base / "mq", password_file=base / "mq" / "passwd", acl_file=base / "mq" / "acl"
    )
    broker.start()
    service_password = secrets.token_urlsafe(16)
    service = Monitor(
        {
            "MONITOR_DATABASE_URL": database_url,
            "MONITOR_MQTT_URL": f"mqtt://monitor:{service_password}@127.0.0.1:{broker.port}",
            "MONITOR_ADMIN_PASSWORD": ADMIN,
            "MONITOR_INSTANCE": f"monitor-{base.name}",
            "MONITOR_BROKER__PASSWORD_FILE": str(broker.password_file),
            "MONITOR_BROKER__ACL_FILE": str(broker.acl_file),
            "MONITOR_BROKER__PID_FILE": str(broker.pid_file),
        },
        base / "svc",
    )
    service.start()
    yield broker, service
    service.stop()
    broker.stop()


def _connect(port: int, username: str, password: str) -> tuple[mqtt.Client, list[str]]:
    received: list[str] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    client.on_message = lambda _c, _u, m: received.append(m.payload.decode())
    client.connect("127.0.0.1", port)
    client.loop_start()
    wait_for(client.is_connected, 10, f"{username} connected")
    return client, received


def _upload(seq: int) -> bytes:
    t = int(datetime.now(UTC).timestamp() * 1000) - 60_000 + seq
    return json.dumps(
        {"fixes": [{"seq": seq, "t": t, "lat": 51.13, "lon": 71.43, "acc": 5.0, "src": "gnss"}]}
    ).encode()


def test_devices_are_confined_to_their_own_topics(
    secured: tuple[Mosquitto, Monitor], database_url: str
) -> None:
    broker, service = secured
    api = Api.login(service.base_url, "admin", ADMIN)
    subject = api.subject("ACL-1")
    a = api.enrol("DEV-A", subject, signed=False, assigned_at="2026-01-01T00:00:00Z")
    b = api.enrol("DEV-B", subject, signed=False, assigned_at="2026-01-01T00:00:00Z")
    assert b["mqtt_password"] != a["mqtt_password"]

    client, acks = _connect(broker.port, "DEV-A", a["mqtt_password"])
    try:
        client.subscribe("em/v1/dev/DEV-A/ack", qos=1)
        # A forges an upload as B (denied by the ACL), then sends its own.
        client.publish("em/v1/dev/DEV-B/up", _upload(1), qos=1).wait_for_publish(10)
        client.publish("em/v1/dev/DEV-A/up", _upload(1), qos=1).wait_for_publish(10)
        wait_for(lambda: '{"upto": 1}' in acks, 20, "DEV-A acknowledged")
    finally:
        client.loop_stop()
        client.disconnect()
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT device_id FROM fixes ORDER BY device_id").fetchall()
        refused = conn.execute("SELECT count(*) FROM rejected_messages").fetchone()
    assert stored == [("DEV-A",)]
    assert refused == (0,)  # the forgery never reached the service


def test_unknown_and_wrong_credentials_cannot_connect(
    secured: tuple[Mosquitto, Monitor],
) -> None:
    broker, service = secured
    api = Api.login(service.base_url, "admin", ADMIN)
    subject = api.subject("ACL-2")
    api.enrol("DEV-C", subject, signed=False)
    for username, password in (("stranger", "guess"), ("DEV-C", "not-its-password")):
        reasons: list[str] = []
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv5)
        client.username_pw_set(username, password)
        client.on_connect = lambda _c, _u, _f, rc, _p, r=reasons: r.append(str(rc))
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        try:
            wait_for(lambda r=reasons: bool(r), 10, f"CONNACK for {username}")
        finally:
            client.loop_stop()
            client.disconnect()
        assert not client.is_connected()
        assert reasons[0] in ("Bad user name or password", "Not authorized"), reasons


def test_a_device_enrolled_later_connects_without_a_broker_restart(
    secured: tuple[Mosquitto, Monitor],
) -> None:
    broker, service = secured
    pid_before = broker.proc.pid if broker.proc else None
    api = Api.login(service.base_url, "admin", ADMIN)
    subject = api.subject("ACL-3")
    creds = api.enrol("DEV-LATE", subject, signed=False)
    client, _ = _connect(broker.port, "DEV-LATE", creds["mqtt_password"])
    client.loop_stop()
    client.disconnect()
    assert broker.proc is not None
    assert broker.proc.pid == pid_before
