"""Bad uploads are refused with a reason and kept; the next good upload is stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from monitor.ingest.codec import sign
from tests.client import Api
from tests.conftest import ADMIN_PASSWORD
from tests.servers import Monitor, Mosquitto, wait_for

pytestmark = pytest.mark.integration


class RawDevice:
    """Publishes exact bytes, as faulty firmware would, and records the acks."""

    def __init__(self, device_id: str, port: int, key: bytes | None = None) -> None:
        self.device_id = device_id
        self.key = key
        self.acks: list[int] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5
        )
        self.client.on_message = lambda _c, _u, m: self.acks.append(json.loads(m.payload)["upto"])
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"em/v1/dev/{device_id}/ack", qos=1)
        self.client.loop_start()

    def publish(self, payload: bytes, sig: str | None = None, extra_sig: str | None = None) -> None:
        props = None
        if sig is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = ("sig", sig)
            if extra_sig is not None:
                props.UserProperty = ("sig", extra_sig)  # paho appends: a second `sig`
        info = self.client.publish(
            f"em/v1/dev/{self.device_id}/up", payload, qos=1, properties=props
        )
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _fix(seq: int, **over: object) -> dict[str, object]:
    t = int(datetime.now(UTC).timestamp() * 1000) - 60_000 + seq
    return {"seq": seq, "t": t, "lat": 51.1282, "lon": 71.4304, "acc": 6.0, "src": "gnss", **over}


def test_broken_uploads_are_refused_and_the_next_good_one_is_stored(
    monitor: Monitor, mosquitto: Mosquitto, database_url: str
) -> None:
    api = Api.login(monitor.base_url, "admin", ADMIN_PASSWORD)
    subject_id = api.subject("CASE-2026-17", tz="Asia/Almaty")
    api.enrol("BR-0100", subject_id, signed=False, assigned_at="2026-01-01T00:00:00Z")
    device = RawDevice("BR-0100", mosquitto.port)
    try:
        device.publish(b'{"fixes": [ {"seq": 1,')  # not JSON
        device.publish(b"[1, 2, 3]")  # not an object
        device.publish(json.dumps({"fixes": [_fix(1, lat=123.0), _fix(2, acc="eight")]}).encode())
        device.publish(json.dumps({"fixes": [_fix(3), _fix(4)]}).encode())

        with psycopg.connect(database_url) as conn:

            def stored() -> bool:
                row = conn.execute("SELECT count(*) FROM fixes WHERE device_id = 'BR-0100'")
                return row.fetchone() == (2,)

            wait_for(stored, 30, "the good upload stored")
            reasons = [
                r[0]
                for r in conn.execute(
                    "SELECT reason FROM rejected_messages WHERE device_id = 'BR-0100' ORDER BY id"
                )
            ]
        assert any("not JSON" in r for r in reasons), reasons
        assert any("not a JSON object" in r for r in reasons), reasons
        assert any("'lat' must be a number in [-90, 90], got 123.0" in r for r in reasons)
        assert any("'acc' must be a number >= 0" in r for r in reasons), reasons
        # The refused records 1 and 2 are accounted for: the watermark covers all four.
        wait_for(lambda: device.acks and device.acks[-1] == 4, 30, "ack upto 4")
    finally:
        device.close()

    fixes = api.get(f"/api/v1/subjects/{subject_id}/fixes")
    assert [f["properties"]["seq"] for f in fixes["features"]] == [3, 4]

    # Operators see what was refused, with the raw bytes and the reason.
    refused = api.get("/api/v1/rejected", device_id="BR-0100", limit=2)
    assert len(refused["items"]) == 2
    assert refused["next"] is not None
    rest = api.get("/api/v1/rejected", device_id="BR-0100", cursor=refused["next"])
    everything = refused["items"] + rest["items"]
    assert {r["raw_text"] for r in everything} >= {'{"fixes": [ {"seq": 1,', "[1, 2, 3]"}
    assert sorted(r["seq"] for r in everything if r["seq"] is not None) == [1, 2]
    metrics = api.http.get("/metrics").text
    # (The broker is shared by the tests: retained messages of other tests' devices are
    # refused too, so only the record count is exact.)
    assert "monitor_messages_refused_total" in metrics
    assert "monitor_records_refused_total 2" in metrics
    # The batch loop's busy time (the benchmark's occupancy figure) counts up.
    busy = [
        line for line in metrics.splitlines() if line.startswith("monitor_batch_busy_us_total ")
    ]
    assert busy
    assert int(busy[0].split()[1]) > 0


def test_signed_device_refuses_forged_uploads_and_raises_integrity(
    monitor: Monitor, mosquitto: Mosquitto, database_url: str
) -> None:
    import base64

    api = Api.login(monitor.base_url, "admin", ADMIN_PASSWORD)
    subject_id = api.subject("CASE-2026-18")
    creds = api.enrol("BR-0200", subject_id, signed=True, assigned_at="2026-01-01T00:00:00Z")
    key = base64.urlsafe_b64decode(creds["signing_key"] + "=")
    device = RawDevice("BR-0200", mosquitto.port)
    try:
        good = json.dumps({"fixes": [_fix(1)]}).encode()
        forged = json.dumps({"fixes": [_fix(2, lat=40.0)]}).encode()
        device.publish(forged)  # no signature
        device.publish(forged, sig=sign(b"\0" * 32, forged))  # wrong key
        device.publish(good, sig=sign(key, good))
        smuggled = json.dumps({"fixes": [_fix(999, lat=41.0)]}).encode()
        device.publish(smuggled, sig=sign(key, good), extra_sig=sign(key, smuggled))
        device.publish(good, sig=sign(key, good))  # a replay changes nothing
        after = json.dumps({"fixes": [_fix(2)]}).encode()
        device.publish(after, sig=sign(key, after))
        with psycopg.connect(database_url) as conn:
            wait_for(
                lambda: (
                    conn.execute(
                        "SELECT count(*), max((detail->>'count')::int) FROM alerts"
                        " WHERE kind = 'integrity'"
                    ).fetchone()
                    == (1, 3)
                ),
                30,
                "one integrity alert counting three forged uploads",
            )
            # Uploads of one device are handled in order: once seq 2 is acknowledged,
            # the replay before it has been handled too, and it stored nothing new.
            wait_for(lambda: 2 in device.acks, 30, "ack upto 2")
            seqs = conn.execute("SELECT seq FROM fixes WHERE device_id = 'BR-0200' ORDER BY seq")
            assert seqs.fetchall() == [(1,), (2,)]
            reasons = sorted(
                r[0]
                for r in conn.execute(
                    "SELECT reason FROM rejected_messages WHERE device_id = 'BR-0200'"
                )
            )
        assert reasons == [
            "more than one 'sig' user property: an upload carries exactly one",
            "signature does not match the payload",
            "signature missing: a signed device must send the MQTT 5 user property 'sig'",
        ]
    finally:
        device.close()
