"""What a bracelet publishes, seen at paho's door (no broker): the upload hook, pacing,
raw and forged uploads; and the OwnTracks phone's messages."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from paho.mqtt.enums import MQTTErrorCode

from device_sim.device import Bracelet
from device_sim.phone import Phone, location, status
from device_sim.signature import decode_key, sign

T0 = 1_763_816_700_000
KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"


@dataclass
class Info:
    mid: int
    rc: MQTTErrorCode = MQTTErrorCode.MQTT_ERR_SUCCESS


class Wire:
    """Stands in for paho's publish: keeps what would have gone out."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, Any]] = []

    def __call__(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                 properties: Any = None) -> Info:  # fmt: skip
        self.sent.append((topic, payload, properties))
        return Info(len(self.sent))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _ready(bracelet: Bracelet, monkeypatch: pytest.MonkeyPatch) -> Wire:
    wire = Wire()
    monkeypatch.setattr(bracelet._client, "publish", wire)
    bracelet._ready = True  # as after CONNACK and SUBACK
    return wire


def test_every_upload_is_handed_to_the_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    b = Bracelet("BR-1", "127.0.0.1", batch_size=4, clock=clock)
    wire = _ready(b, monkeypatch)
    seen: list[bytes] = []
    b.on_upload = seen.append
    for i in range(10):
        b.add_fix(T0 + i, 43.2, 76.9)
    b._send_due(clock())
    assert [json.loads(p)["fixes"][0]["seq"] for p in seen] == [1, 5, 9]
    assert seen == [payload for _, payload, _ in wire.sent]


def test_a_minimum_gap_paces_the_uploads(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    b = Bracelet("BR-1", "127.0.0.1", batch_size=4, min_upload_gap_s=0.5, clock=clock)
    wire = _ready(b, monkeypatch)
    for i in range(10):
        b.add_fix(T0 + i, 43.2, 76.9)
    b._send_due(clock())
    assert len(wire.sent) == 1
    clock.now += 0.4
    b._send_due(clock())
    assert len(wire.sent) == 1
    clock.now += 0.1
    b._send_due(clock())
    assert len(wire.sent) == 2


def test_a_forged_upload_carries_only_the_forged_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    b = Bracelet("BR-1", "127.0.0.1", signing_key=KEY)
    wire = _ready(b, monkeypatch)
    payload = b'{"fixes":[],"events":[]}'
    b.publish_raw_nowait(payload)
    b.publish_raw_nowait(payload, signature="forged")
    (_, _, genuine), (_, _, forged) = wire.sent
    assert genuine.UserProperty == [("sig", sign(decode_key(KEY), payload))]
    assert forged.UserProperty == [("sig", "forged")]
    with pytest.raises(ValueError, match="MQTT 5"):
        Bracelet("BR-2", "127.0.0.1", mqtt5=False).publish_raw_nowait(payload, signature="x")


def test_a_raw_upload_is_done_at_its_puback(monkeypatch: pytest.MonkeyPatch) -> None:
    b = Bracelet("BR-1", "127.0.0.1")
    _ready(b, monkeypatch)
    mid = b.publish_raw_nowait(b"{}")
    assert not b.raw_done(mid)
    b._inflight.pop(mid)  # what on_publish does
    assert b.raw_done(mid)


def test_owntracks_messages_are_the_apps() -> None:
    doc = location(1763816700, 43.2389491, 76.8897092, 13.6, batt=83, vel_kmh=4.4)
    assert doc == {
        "_type": "location", "acc": 14, "batt": 83, "bs": 1, "conn": "m",
        "created_at": 1763816700, "lat": 43.238949, "lon": 76.889709, "m": 1, "t": "p",
        "tid": "ph", "tst": 1763816700, "vel": 4,
    }  # fmt: skip
    buffered = location(1763816700, 43.2, 76.9, 9, created_at=1763820300)
    assert buffered["created_at"] > buffered["tst"]
    assert status(power_saving=True)["android"] == {
        "hib": 0, "bo": 0, "loc": 1, "ps": 1, "wifi": 1,
    }  # fmt: skip


def test_a_phone_keeps_each_message_until_the_broker_has_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    phone = Phone("PH-1", "owntracks/alice/phone", "127.0.0.1", max_inflight=2)
    wire = Wire()
    monkeypatch.setattr(phone._client, "publish", wire)
    phone._connected = True
    for i in range(3):
        phone.send_location(location(1763816700 + i, 43.2, 76.9, 9))
    phone.send_status(status())
    phone._send()
    assert [t for t, _, _ in wire.sent] == ["owntracks/alice/phone"] * 2  # two in flight
    assert phone.pending == 4
    phone._on_publish(phone._client, None, 1, _Ok(), None)
    phone._send()
    assert phone.pending == 3
    assert phone.published == 1
    # A lost connection forgets what was in flight: it goes again after the reconnect.
    phone._on_disconnect(phone._client, None, None, _Ok(), None)  # type: ignore[arg-type]
    phone._connected = True
    phone._send()
    assert [t for t, _, _ in wire.sent][-2:] == ["owntracks/alice/phone"] * 2
    assert wire.sent[-1][1] == wire.sent[1][1] or wire.sent[-2][1] == wire.sent[1][1]


class _Ok:
    is_failure = False


def test_a_phone_topic_is_checked() -> None:
    with pytest.raises(ValueError, match="owntracks/USER/DEVICE"):
        Phone("PH-1", "owntracks/alice", "127.0.0.1")
