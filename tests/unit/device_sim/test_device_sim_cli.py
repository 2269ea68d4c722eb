"""`device-sim` arguments and the refusals that need no server."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from device_sim.cli import main, parse_broker
from device_sim.fleet import Broker


def test_broker_urls() -> None:
    assert parse_broker("mqtt://127.0.0.1:1883") == Broker("127.0.0.1", 1883, False)
    assert parse_broker("mqtt://127.0.0.1") == Broker("127.0.0.1", 1883, False)
    assert parse_broker("mqtts://broker.example:8884") == Broker("broker.example", 8884, True)
    assert parse_broker("mqtts://broker.example") == Broker("broker.example", 8883, True)
    assert parse_broker("mqtt://monitor:secret@127.0.0.1:1884") == Broker("127.0.0.1", 1884)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_broker("http://127.0.0.1:1883")


def test_enrolment_needs_the_admin_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MONITOR_ADMIN_PASSWORD", raising=False)
    assert main(["run", "--state-dir", str(tmp_path), "--devices", "2"]) == 2
    assert "--admin-password" in capsys.readouterr().err


def test_at_least_one_device(tmp_path: Path) -> None:
    assert main(["run", "--state-dir", str(tmp_path), "--devices", "0", "--no-api"]) == 2


def test_upload_refuses_a_bad_signing_key_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = tmp_path / "up.json"
    payload.write_text('{"fixes": [], "events": []}')
    argv = ["upload", "--device-id", "BR-1", "--signing-key", "short", "--file", str(payload)]
    assert main(argv) == 2
    assert "signing key" in capsys.readouterr().err


def test_a_signed_upload_needs_mqtt5(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = tmp_path / "up.json"
    payload.write_text("{}")
    key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
    argv = [
        "upload",
        "--device-id",
        "BR-1",
        "--signing-key",
        key,
        "--mqtt311",
        "--file",
        str(payload),
    ]
    assert main(argv) == 2
    assert "MQTT 5" in capsys.readouterr().err
