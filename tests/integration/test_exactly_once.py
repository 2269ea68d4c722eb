"""A record is `(device_id, seq)`: stored once, whatever `t` a resend carries, and what
the service knew of open device conditions survives a restart.

Before the unique record became `(device_id, seq)`, a resend of an acknowledged seq with
another `t` was stored a second time (the index was `(device_id, seq, t)`); before
conditions were read back from the open alerts, a comms loss open at a restart was never
cleared, and a spoofing alert stayed open for good.
"""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime

import psycopg
import pytest

from tests.client import Api
from tests.conftest import ADMIN_PASSWORD
from tests.integration.test_ingest_refusals import RawDevice
from tests.servers import Monitor, Mosquitto, wait_for

pytestmark = pytest.mark.integration


def _fix(seq: int, t_ms: int, lat: float = 51.1282) -> dict[str, object]:
    return {"seq": seq, "t": t_ms, "lat": lat, "lon": 71.4304, "acc": 6.0, "src": "gnss"}


def _count(url: str, sql: str, *args: object) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, args).fetchone()
        return int(row[0]) if row else 0


def test_a_resent_seq_with_another_time_is_stored_once(
    monitor: Monitor, mosquitto: Mosquitto, database_url: str
) -> None:
    api = Api.login(monitor.base_url, "admin", ADMIN_PASSWORD)
    subject_id = api.subject("ONCE-1")
    api.enrol("BR-0300", subject_id, signed=False, assigned_at="2026-01-01T00:00:00Z")
    device = RawDevice("BR-0300", mosquitto.port)
    t0 = int(datetime.now(UTC).timestamp() * 1000) - 120_000
    try:
        device.publish(json.dumps({"fixes": [_fix(s, t0 + s * 1000) for s in (1, 2, 3)]}).encode())
        wait_for(lambda: device.acks and device.acks[-1] == 3, 30, "ack upto 3")
        # Firmware that rebuilt its journal resends seq 2 with another time, and in one
        # upload gives seq 4 twice: each seq is one record.
        device.publish(json.dumps({"fixes": [_fix(2, t0 + 2500, lat=51.2)]}).encode())
        device.publish(
            json.dumps(
                {"fixes": [_fix(4, t0 + 4000), _fix(4, t0 + 4100, lat=51.3), _fix(5, t0 + 5000)]}
            ).encode()
        )
        wait_for(lambda: device.acks and device.acks[-1] == 5, 30, "ack upto 5")
    finally:
        device.close()
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT seq, count(*), min(lat) FROM fixes WHERE device_id = 'BR-0300'"
            " GROUP BY seq ORDER BY seq"
        ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]
    assert rows[1][2] == pytest.approx(51.1282)  # the first copy of seq 2 stands


def test_conditions_open_at_a_restart_are_cleared_after_it(
    monitor: Monitor, mosquitto: Mosquitto, database_url: str
) -> None:
    """A device silent past its interval has comms_loss open; the service restarts; the
    device speaks again: the same alert is cleared, and no second one opens."""
    monitor.stop()
    monitor.env.update(
        {
            "MONITOR_COMMS_BUFFER_S": "1",
            "MONITOR_LIVENESS_EVERY_TICKS": "1",
        }
    )
    monitor.start()
    api = Api.login(monitor.base_url, "admin", ADMIN_PASSWORD)
    subject_id = api.subject("ONCE-2")
    api.enrol("BR-0301", subject_id, signed=False, assigned_at="2026-01-01T00:00:00Z")
    # The device's upload interval is its enrolment default (60 s); comms loss opens
    # 61 s after the service started without hearing it. Shorten it through the DB.
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE devices SET upload_interval_s = 2 WHERE device_id = 'BR-0301'")
        conn.execute("SELECT pg_notify('devices', 'BR-0301')")
        conn.commit()
    open_sql = (
        "SELECT count(*) FROM alerts WHERE device_id = 'BR-0301' AND kind = 'comms_loss'"
        " AND cleared_at IS NULL"
    )
    wait_for(lambda: _count(database_url, open_sql) == 1, 60, "comms_loss open")
    with psycopg.connect(database_url) as conn:
        row = conn.execute(open_sql.replace("count(*)", "id::text")).fetchone()
        assert row is not None
        opened = row[0]
    monitor.stop(signal.SIGKILL)
    monitor.start()
    device = RawDevice("BR-0301", mosquitto.port)
    t0 = int(datetime.now(UTC).timestamp() * 1000)
    try:
        device.publish(json.dumps({"fixes": [_fix(1, t0)]}).encode())
        wait_for(lambda: device.acks and device.acks[-1] == 1, 30, "ack upto 1")
        cleared = "SELECT count(*) FROM alerts WHERE id = %s AND cleared_at IS NOT NULL"
        wait_for(lambda: _count(database_url, cleared, opened) == 1, 30, "that alert cleared")
    finally:
        device.close()
