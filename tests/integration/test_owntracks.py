"""Enrolled OwnTracks phones: golden payloads shaped as the app sends them, published by
mosquitto_pub, mapped onto fixes, events and alerts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from tests.client import Api
from tests.conftest import ADMIN_PASSWORD
from tests.servers import Monitor, Mosquitto, wait_for

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "owntracks"
BASE = "owntracks/alice/phone"


def _pub(port: int, topic: str, name: str, retain: bool = False) -> None:
    tool = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
    args = [
        tool,
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-q",
        "1",
        "-t",
        topic,
        "-f",
        str(GOLDEN / name),
        "-i",
        "alice-phone",
    ]
    if retain:
        args.append("-r")
    subprocess.run(args, check=True, timeout=10)


def test_owntracks_phone_is_a_first_class_device(
    monitor: Monitor, mosquitto: Mosquitto, database_url: str
) -> None:
    api = Api.login(monitor.base_url, "admin", ADMIN_PASSWORD)
    subject = api.subject("OT-1")
    api.post(
        "/api/v1/devices",
        {
            "device_id": "PH-ALICE",
            "subject_id": subject,
            "kind": "owntracks",
            "owntracks_topic": BASE,
            "assigned_at": "2025-11-01T00:00:00Z",
        },
    )
    _pub(mosquitto.port, BASE, "location-android.json", retain=True)
    _pub(mosquitto.port, BASE, "location-android.json", retain=True)  # seen again: one fix
    _pub(mosquitto.port, BASE, "location-buffered.json")
    _pub(mosquitto.port, f"{BASE}/event", "transition-leave.json")
    _pub(mosquitto.port, f"{BASE}/status", "status-android-risky.json")

    with psycopg.connect(database_url) as conn:

        def count(sql: str) -> int:
            row = conn.execute(sql).fetchone()
            return int(row[0]) if row else 0

        wait_for(
            lambda: count("SELECT count(*) FROM alerts WHERE kind = 'phone_status'") == 1,
            30,
            "the phone_status warning",
        )
        fixes = conn.execute(
            "SELECT seq, extract(epoch FROM t)::bigint, lat, lon, acc, batt FROM fixes"
            " WHERE device_id = 'PH-ALICE' ORDER BY t"
        ).fetchall()
        assert fixes == [
            (None, 1763816700, 43.238949, 76.889709, 14.0, 83),
            (None, 1763816760, 43.24321, 76.89754, 9.0, 80),
        ]
        kinds = [
            r[0]
            for r in conn.execute(
                "SELECT kind FROM device_events WHERE device_id = 'PH-ALICE' ORDER BY received_at"
            )
        ]
        assert "transition" in kinds
        assert "phone_status" in kinds
        warning = conn.execute(
            "SELECT severity, detail FROM alerts WHERE kind = 'phone_status'"
        ).fetchone()
        assert warning is not None
        assert warning[0] == "warning"
        assert "power saving is on" in warning[1]["warnings"]

        # Settings restored: the warning clears.
        _pub(mosquitto.port, f"{BASE}/status", "status-android-ok.json")
        wait_for(
            lambda: (
                count(
                    "SELECT count(*) FROM alerts WHERE kind = 'phone_status'"
                    " AND cleared_at IS NOT NULL"
                )
                == 1
            ),
            30,
            "the warning cleared",
        )

    # The broker is shared by the tests: drop the retained location.
    tool = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
    subprocess.run(
        [tool, "-h", "127.0.0.1", "-p", str(mosquitto.port), "-t", BASE, "-r", "-n"],
        check=True,
        timeout=10,
    )
    # The phone's fixes are the subject's fixes, in the API too.
    features = api.get(f"/api/v1/subjects/{subject}/fixes")["features"]
    assert [f["properties"]["seq"] for f in features] == [None, None]
    assert features[0]["geometry"]["coordinates"] == [76.889709, 43.238949]


def test_owntracks_from_an_unenrolled_topic_is_refused(
    monitor: Monitor, mosquitto: Mosquitto, database_url: str
) -> None:
    _pub(mosquitto.port, "owntracks/mallory/phone", "location-android.json")
    with psycopg.connect(database_url) as conn:
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM rejected_messages WHERE topic = 'owntracks/mallory/phone'"
                ).fetchone()
                == (1,)
            ),
            30,
            "the refusal",
        )
        reason = conn.execute(
            "SELECT reason FROM rejected_messages WHERE topic = 'owntracks/mallory/phone'"
        ).fetchone()
    assert reason == ("no device is enrolled for 'owntracks/mallory/phone'",)
