"""The TLS listener, as production runs it (port 8883 there), with a self-signed CA: the
service and a device connect over TLS; a client that does not trust the CA cannot."""

from __future__ import annotations

import json
import ssl
import subprocess
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

ADMIN = "tls-admin-1"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 / localhost signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=monitor test CA",
        cwd=directory,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
        cwd=directory,
    )
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        cwd=directory,
    )
    return directory / "ca.crt", directory / "server.crt", directory / "server.key"


@pytest.fixture
def tls_stack(workdir: Path, database_url: str) -> Iterator[tuple[Mosquitto, Monitor, Path]]:
    base = workdir / "tls"
    ca, cert, key = make_ca(base / "pki")
    broker = Mosquitto(base / "mq", tls=(ca, cert, key))
    broker.start()
    service = Monitor(
        {
            "MONITOR_DATABASE_URL": database_url,
            "MONITOR_MQTT_URL": f"mqtts://127.0.0.1:{broker.port}",
            "MONITOR_MQTT_CA_FILE": str(ca),
            "MONITOR_ADMIN_PASSWORD": ADMIN,
            "MONITOR_INSTANCE": "monitor-tls",
        },
        base / "svc",
    )
    service.start()  # healthy means: subscribed over TLS
    yield broker, service, ca
    service.stop()
    broker.stop()


def test_service_and_device_over_tls(
    tls_stack: tuple[Mosquitto, Monitor, Path], database_url: str
) -> None:
    broker, service, ca = tls_stack
    api = Api.login(service.base_url, "admin", ADMIN)
    subject = api.subject("TLS-1")
    api.enrol("BR-TLS", subject, signed=False, assigned_at="2026-01-01T00:00:00Z")

    acks: list[int] = []
    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="BR-TLS", protocol=mqtt.MQTTv5)
    device.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
    device.on_message = lambda _c, _u, m: acks.append(json.loads(m.payload)["upto"])
    device.connect("127.0.0.1", broker.port)
    device.loop_start()
    try:
        device.subscribe("em/v1/dev/BR-TLS/ack", qos=1)
        t = int(datetime.now(UTC).timestamp() * 1000) - 1000
        upload = {
            "fixes": [{"seq": 1, "t": t, "lat": 51.13, "lon": 71.43, "acc": 5.0, "src": "gnss"}]
        }
        device.publish("em/v1/dev/BR-TLS/up", json.dumps(upload), qos=1).wait_for_publish(10)
        wait_for(lambda: 1 in acks, 20, "ack over TLS")
    finally:
        device.loop_stop()
        device.disconnect()
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM fixes").fetchone() == (1,)


def test_a_client_that_does_not_trust_the_ca_cannot_connect(
    tls_stack: tuple[Mosquitto, Monitor, Path],
) -> None:
    broker, _, _ = tls_stack
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="stranger", protocol=mqtt.MQTTv5)
    client.tls_set(cert_reqs=ssl.CERT_REQUIRED)  # the system's CAs only
    with pytest.raises(ssl.SSLCertVerificationError):
        client.connect("127.0.0.1", broker.port)
