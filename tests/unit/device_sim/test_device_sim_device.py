"""A bracelet's answers to commands and acks, fed through paho's message callback
without a broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device_sim.device import Bracelet, Reading, topic

T0 = 1_763_816_700_000
KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"


def _deliver(bracelet: Bracelet, leaf: str, payload: object) -> None:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    bracelet.receive(topic(bracelet.device_id, leaf), raw)


def _events(bracelet: Bracelet) -> list[dict[str, object]]:
    return [dict(r.body) for r in bracelet.unacked() if r.kind == "event"]


@pytest.fixture
def bracelet(tmp_path: Path) -> Bracelet:
    return Bracelet(
        "BR-0001",
        "127.0.0.1",
        1883,
        "BR-0001",
        "secret",
        signing_key=KEY,
        state_dir=tmp_path / "BR-0001",
        wall_ms=lambda: T0 + 60_000,
    )


def test_locate_sends_a_fresh_fix_and_answers(bracelet: Bracelet) -> None:
    bracelet.locator = lambda t: Reading(43.24, 76.89, 7.5, "gnss", 0.3, 80)
    _deliver(bracelet, "cmd", {"id": "c-81f2", "cmd": "locate"})
    fixes = [r.body for r in bracelet.unacked() if r.kind == "fix"]
    assert fixes == [
        {
            "seq": 1,
            "t": T0 + 60_000,
            "lat": 43.24,
            "lon": 76.89,
            "acc": 7.5,
            "src": "gnss",
            "spd": 0.3,
            "batt": 80,
        }
    ]
    assert _events(bracelet) == [
        {
            "seq": 2,
            "t": T0 + 60_000,
            "kind": "cmd_result",
            "detail": {"id": "c-81f2", "ok": True, "seq": 1},
        }
    ]


def test_locate_without_a_locator_repeats_the_last_position(bracelet: Bracelet) -> None:
    bracelet.add_fix(T0, 43.1, 76.8, acc=9.0)
    _deliver(bracelet, "cmd", {"id": "c-1", "cmd": "locate"})
    last_fix = [r.body for r in bracelet.unacked() if r.kind == "fix"][-1]
    assert (last_fix["t"], last_fix["lat"], last_fix["lon"]) == (T0 + 60_000, 43.1, 76.8)


def test_locate_with_no_position_at_all_says_so(bracelet: Bracelet) -> None:
    _deliver(bracelet, "cmd", {"id": "c-1", "cmd": "locate"})
    assert _events(bracelet)[0]["detail"] == {"id": "c-1", "ok": False, "error": "no position"}


def test_set_interval_changes_both_intervals(bracelet: Bracelet) -> None:
    _deliver(
        bracelet, "cmd", {"id": "c-2", "cmd": "set_interval", "args": {"fix_s": 15, "upload_s": 60}}
    )
    assert bracelet.fix_interval_s == 15.0
    assert bracelet.upload_interval_s == 60.0
    assert _events(bracelet)[0]["detail"] == {
        "id": "c-2",
        "ok": True,
        "fix_s": 15.0,
        "upload_s": 60.0,
    }


@pytest.mark.parametrize("args", [None, {}, {"fix_s": 0}, {"fix_s": "15"}, {"upload_s": True}])
def test_a_bad_set_interval_is_answered_not_applied(bracelet: Bracelet, args: object) -> None:
    before = (bracelet.fix_interval_s, bracelet.upload_interval_s)
    _deliver(bracelet, "cmd", {"id": "c-3", "cmd": "set_interval", "args": args})
    detail = _events(bracelet)[0]["detail"]
    assert isinstance(detail, dict)
    assert detail["ok"] is False
    assert (bracelet.fix_interval_s, bracelet.upload_interval_s) == before


def test_vibrate_and_unknown_commands_are_answered(bracelet: Bracelet) -> None:
    _deliver(bracelet, "cmd", {"id": "c-4", "cmd": "vibrate"})
    _deliver(bracelet, "cmd", {"id": "c-5", "cmd": "self_destruct"})
    details = [e["detail"] for e in _events(bracelet)]
    assert details == [
        {"id": "c-4", "ok": True},
        {"id": "c-5", "ok": False, "error": "unknown command 'self_destruct'"},
    ]


def test_a_command_delivered_twice_is_answered_once(bracelet: Bracelet) -> None:
    for _ in range(2):
        _deliver(bracelet, "cmd", {"id": "c-6", "cmd": "vibrate"})
    assert len(_events(bracelet)) == 1


@pytest.mark.parametrize("payload", [b"not json", b"[]", b'{"cmd": "vibrate"}', b'{"id": 7}'])
def test_commands_without_an_id_are_ignored(bracelet: Bracelet, payload: bytes) -> None:
    _deliver(bracelet, "cmd", payload)
    assert bracelet.last_seq == 0


def test_the_retained_ack_releases_records(bracelet: Bracelet) -> None:
    for i in range(5):
        bracelet.add_fix(T0 + i, 43.2, 76.9)
    _deliver(bracelet, "ack", {"upto": 3})
    assert bracelet.acked_upto == 3
    assert bracelet.pending == 2
    assert bracelet.last_ack == 3


@pytest.mark.parametrize(
    "payload", [b"{}", b'{"upto": -1}', b'{"upto": "3"}', b'{"upto": true}', b"x"]
)
def test_unreadable_acks_change_nothing(bracelet: Bracelet, payload: bytes) -> None:
    bracelet.add_fix(T0, 43.2, 76.9)
    _deliver(bracelet, "ack", payload)
    assert bracelet.acked_upto == 0
    assert bracelet.pending == 1


def test_the_seq_continues_after_a_restart(tmp_path: Path) -> None:
    first = Bracelet("BR-0002", "127.0.0.1", state_dir=tmp_path)
    assert [first.add_fix(T0 + i, 43.2, 76.9) for i in range(3)] == [1, 2, 3]
    first.close()
    second = Bracelet("BR-0002", "127.0.0.1", state_dir=tmp_path)
    assert second.last_seq == 3
    assert second.pending == 3
    assert second.add_event(T0, "boot") == 4


def test_configurations_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="MQTT 5"):
        Bracelet("BR-0003", "127.0.0.1", signing_key=KEY, mqtt5=False)
    with pytest.raises(ValueError, match="batch_size"):
        Bracelet("BR-0003", "127.0.0.1", batch_size=501)
    with pytest.raises(ValueError, match="signing key"):
        Bracelet("BR-0003", "127.0.0.1", signing_key="short")


def test_topics_follow_the_protocol() -> None:
    assert topic("BR-0001", "up") == "em/v1/dev/BR-0001/up"
    assert topic("BR-0001", "ack") == "em/v1/dev/BR-0001/ack"
