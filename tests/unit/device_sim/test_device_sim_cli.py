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


def test_scenario_list_names_them_all(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenario", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("leave-radius", "curfew", "offline-burst", "owntracks", "forged-upload"):
        assert name in out


def test_an_unknown_scenario_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["scenario", "leave-radius,teleport", "--state-dir", str(tmp_path)]
    assert main([*argv, "--admin-password", "x"]) == 2
    assert "teleport" in capsys.readouterr().err


def test_a_future_anchor_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["scenario", "tamper", "--anchor", "2999-01-01T00:00:00Z", "--admin-password", "x"]
    assert main([*argv, "--state-dir", str(tmp_path)]) == 2
    assert "future" in capsys.readouterr().err


def test_scenario_without_a_backend_is_a_connection_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _closed_port()
    argv = ["scenario", "tamper", "--api-url", f"http://127.0.0.1:{port}", "--admin-password"]
    assert main([*argv, "x", "--state-dir", str(tmp_path)]) == 2
    assert "cannot log in" in capsys.readouterr().err


def test_check_needs_something_to_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--admin-password", "x"]) == 2
    assert "--expect-file" in capsys.readouterr().err


def test_check_refuses_an_unreadable_expect_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "expected.json"
    bad.write_text("{not json")
    assert main(["check", "--expect-file", str(bad), "--admin-password", "x"]) == 2
    assert "not JSON" in capsys.readouterr().err
    bad.write_text('{"version": 9}')
    assert main(["check", "--expect-file", str(bad), "--admin-password", "x"]) == 2
    assert "version" in capsys.readouterr().err


def test_check_without_a_backend_is_a_connection_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expect = tmp_path / "expected.json"
    expect.write_text('{"version": 1, "expectations": []}')
    url = f"http://127.0.0.1:{_closed_port()}"
    argv = ["check", "--api-url", url, "--admin-password", "x", "--expect-file", str(expect)]
    assert main(argv) == 2
    assert "cannot log in" in capsys.readouterr().err


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
