"""monitor.ingest.owntracks: OwnTracks JSON mapped onto fixes and device events."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from monitor.ingest.owntracks import decode_owntracks

RECEIVED = datetime(2026, 11, 22, 13, 5, 1, tzinfo=UTC)
TST = 1_795_352_700  # 2026-11-22T13:05:00Z in epoch seconds


def location(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"_type": "location", "lat": 51.1282, "lon": 71.4304, "tst": TST}
    doc.update(fields)
    return doc


def decode(doc: object) -> tuple[Any, Any]:
    payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return decode_owntracks("phone-1", payload, RECEIVED)


def test_a_location_is_a_fix_without_seq() -> None:
    fix, event = decode(location(acc=12, batt=64, vel=36, created_at=TST + 2))
    assert event is None
    assert fix is not None
    assert (fix.device_id, fix.seq, fix.t) == ("phone-1", None, datetime.fromtimestamp(TST, UTC))
    assert (fix.lat, fix.lon, fix.acc, fix.src, fix.batt) == (51.1282, 71.4304, 12.0, "gnss", 64)
    assert fix.spd == pytest.approx(10.0)  # 36 km/h
    assert fix.received_at == RECEIVED


def test_a_location_without_accuracy_is_taken_as_100_m() -> None:
    fix, _ = decode(location())
    assert fix.acc == 100.0
    assert (fix.spd, fix.batt) == (None, None)


def test_a_coarse_wifi_location_is_marked_wifi() -> None:
    fix, _ = decode(location(acc=80, conn="w"))
    assert fix.src == "wifi"


@pytest.mark.parametrize("batt", [101, -1, True, "50"])
def test_an_impossible_battery_level_is_dropped(batt: object) -> None:
    fix, _ = decode(location(batt=batt))
    assert fix.batt is None


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        pytest.param(b"{", "not JSON", id="not-json"),
        pytest.param(b"\xff\xfe\xfd", "not JSON", id="not-text"),
        pytest.param([], "not a JSON object", id="array"),
        pytest.param(location(lat=91), "coordinates out of range", id="lat-91"),
        pytest.param(location(lon=-180.5), "coordinates out of range", id="lon"),
        pytest.param(location(lat="51.1"), "'lat' must be a number", id="lat-string"),
        pytest.param(location(lon=True), "'lon' must be a number", id="lon-bool"),
        pytest.param({"_type": "location", "lon": 1, "tst": TST}, "'lat' is missing", id="no-lat"),
        pytest.param(location(tst=float(TST)), "'tst' must be an integer", id="tst-float"),
        pytest.param(location(tst=None), "'tst' must be an integer", id="tst-null"),
        pytest.param(location(tst=True), "'tst' must be an integer", id="tst-bool"),
        pytest.param({"_type": "waypoint"}, "unsupported _type", id="waypoint"),
        pytest.param({"lat": 1}, "unsupported _type", id="no-type"),
    ],
)
def test_refused_payloads(doc: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode(doc)


@pytest.mark.parametrize(
    ("kind", "name"),
    [("lwt", "offline"), ("transition", "transition")],
)
def test_other_messages_are_device_events(kind: str, name: str) -> None:
    doc = {"_type": kind, "tst": TST}
    fix, event = decode(doc)
    assert fix is None
    assert (event.device_id, event.seq, event.kind, event.detail) == ("phone-1", None, name, doc)
    assert event.t == datetime.fromtimestamp(TST, UTC)


def test_a_status_carries_the_settings_that_put_reporting_at_risk() -> None:
    doc = {"_type": "status", "android": {"hib": 0, "bo": 1, "loc": 1, "ps": 1, "wifi": 1}}
    fix, event = decode(doc)
    assert fix is None
    assert event.kind == "phone_status"
    assert event.detail == {
        "warnings": ["power saving is on", "battery optimisation is on for the app"],
        "status": doc,
    }
    healthy = {"_type": "status", "android": {"hib": 0, "bo": 0, "loc": 1, "ps": 0}}
    assert decode(healthy)[1].detail["warnings"] == []


def test_an_event_without_tst_is_dated_on_arrival() -> None:
    _, event = decode({"_type": "lwt"})
    assert event.t == RECEIVED


@pytest.mark.parametrize("kind", ["location", "lwt"])
def test_an_absurd_tst_is_a_value_error(kind: str) -> None:
    doc = location(tst=10**17) if kind == "location" else {"_type": "lwt", "tst": 10**17}
    with pytest.raises(ValueError, match="tst"):
        decode(doc)


def test_a_huge_integer_accuracy_is_a_value_error() -> None:
    payload = json.dumps(location(acc=0)).encode().replace(b'"acc": 0', b'"acc": 1' + b"0" * 400)
    with pytest.raises(ValueError, match="acc"):
        decode(payload)
