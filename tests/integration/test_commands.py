"""Commands from the API to a device, tracked to their cmd_result; an unanswered locate
is reported."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from device_sim.device import Bracelet
from tests.client import Api
from tests.conftest import ADMIN_PASSWORD
from tests.servers import Monitor, Mosquitto, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def quick_locate(database_url: str, mosquitto: Mosquitto, workdir: Path) -> Iterator[Monitor]:
    service = Monitor(
        {
            "MONITOR_DATABASE_URL": database_url,
            "MONITOR_MQTT_URL": f"mqtt://127.0.0.1:{mosquitto.port}",
            "MONITOR_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "MONITOR_INSTANCE": "monitor-commands",
            "MONITOR_LOCATE_TIMEOUT_S": "2",
        },
        workdir / "commands",
    )
    service.start()
    yield service
    service.stop()


def _commands(api: Api, device_id: str) -> list[dict[str, object]]:
    return list(api.get(f"/api/v1/devices/{device_id}/commands")["items"])


def test_commands_are_answered_and_an_unanswered_locate_is_reported(
    quick_locate: Monitor, mosquitto: Mosquitto
) -> None:
    api = Api.login(quick_locate.base_url, "admin", ADMIN_PASSWORD)
    subject = api.subject("CMD-1")
    creds = api.enrol("BR-CMD", subject, signed=True, assigned_at="2026-01-01T00:00:00Z")
    device = Bracelet(
        "BR-CMD",
        "127.0.0.1",
        mosquitto.port,
        creds["mqtt_username"],
        creds["mqtt_password"],
        signing_key=creds["signing_key"],
        fix_interval_s=60,
        upload_interval_s=0.2,
    )
    device.connect()
    try:
        # A position to answer the locate with.
        device.add_fix(int(time.time() * 1000) - 1000, 51.1282, 71.4304, acc=6.0)
        locate = api.post("/api/v1/devices/BR-CMD/commands", {"cmd": "locate"})
        interval = api.post(
            "/api/v1/devices/BR-CMD/commands",
            {"cmd": "set_interval", "args": {"fix_s": 15, "upload_s": 30}},
        )
        assert locate["state"] == "sent"

        def answered() -> bool:
            device.poll(0.05)
            states = {c["id"]: c["state"] for c in _commands(api, "BR-CMD")}
            return states[locate["id"]] == "ok" and states[interval["id"]] == "ok"

        wait_for(answered, 30, "both commands answered")
        assert device.fix_interval_s == 15
        assert api.get("/api/v1/devices/BR-CMD")["fix_interval_s"] == 15
    finally:
        device.close()

    # The device is gone: a locate now goes unanswered and is reported.
    lost = api.post("/api/v1/devices/BR-CMD/commands", {"cmd": "locate"})
    wait_for(
        lambda: {c["id"]: c["state"] for c in _commands(api, "BR-CMD")}[lost["id"]] == "unanswered",
        30,
        "the locate reported unanswered",
    )
    alerts = api.get("/api/v1/alerts", subject_id=subject)["items"]
    assert any(
        a["kind"] == "comms_loss" and a["detail"].get("command_id") == lost["id"] for a in alerts
    )


def test_bad_commands_are_refused(quick_locate: Monitor) -> None:
    api = Api.login(quick_locate.base_url, "admin", ADMIN_PASSWORD)
    subject = api.subject("CMD-2")
    api.enrol("BR-CMD2", subject)
    http = api.http
    assert (
        http.post("/api/v1/devices/BR-CMD2/commands", json={"cmd": "selfdestruct"}).status_code
        == 422
    )
    r = http.post("/api/v1/devices/BR-CMD2/commands", json={"cmd": "set_interval"})
    assert r.status_code == 422
    assert "args" in r.json()["detail"]
    r = http.post("/api/v1/devices/NOPE-1/commands", json={"cmd": "locate"})
    assert r.status_code == 404
    assert isinstance(http, httpx.Client)
