"""Orders with their history, legal holds, and the retention job run with a fake clock."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from tests.client import Api
from tests.conftest import ADMIN_PASSWORD
from tests.servers import Monitor

pytestmark = pytest.mark.integration

HOME = [71.4304, 51.1282]


def _order(api: Api, subject: str, ends_at: str | None, **extra: object) -> dict[str, object]:
    body = {
        "authority": "Astana city court",
        "reference": "2-1234/2025",
        "starts_at": "2025-11-01T00:00:00Z",
        "ends_at": ends_at,
        **extra,
    }
    return dict(api.post(f"/api/v1/subjects/{subject}/orders", body))


def test_an_order_sets_its_status_and_keeps_its_history(monitor: Monitor) -> None:
    api = Api.login(monitor.base_url, "admin", ADMIN_PASSWORD)
    subject = api.subject("ORD-1")
    order = _order(api, subject, "2027-01-01T00:00:00Z", status="yellow", home=HOME)
    assert api.get(f"/api/v1/subjects/{subject}")["status"] == "yellow"
    changed = api.http.patch(
        f"/api/v1/orders/{order['id']}", json={"ends_at": "2027-03-01T00:00:00Z"}
    ).json()
    assert changed["version"] == 2
    listed = api.get(f"/api/v1/subjects/{subject}/orders")
    assert [o["ends_at"] for o in listed["orders"]] == ["2027-03-01T00:00:00.000Z"]
    assert [o["version"] for o in listed["history"]] == [1, 2]
    bad = api.http.post(
        f"/api/v1/subjects/{subject}/orders",
        json={
            "authority": "x",
            "reference": "y",
            "starts_at": "2026-01-02T00:00:00Z",
            "ends_at": "2026-01-01T00:00:00Z",
        },
    )
    assert bad.status_code == 422
    red = api.http.post(
        f"/api/v1/subjects/{subject}/orders",
        json={
            "authority": "x",
            "reference": "y",
            "starts_at": "2026-01-02T00:00:00Z",
            "status": "red",
        },
    )
    assert red.status_code == 422
    assert "home" in red.text


def _retention(database_url: str, now: str) -> str:
    env = {**os.environ, "MONITOR_DATABASE_URL": database_url}
    result = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "retention", "run", "--now", now, "--days", "60"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout


def test_retention_drops_and_deletes_only_what_may_go(monitor: Monitor, database_url: str) -> None:
    api = Api.login(monitor.base_url, "admin", ADMIN_PASSWORD)
    ended = api.subject("RET-ENDED")
    held = api.subject("RET-HELD")
    active = api.subject("RET-ACTIVE")
    no_order = api.subject("RET-NONE")
    for subject in (ended, held):
        _order(api, subject, "2026-01-31T00:00:00Z")
    _order(api, active, None)
    api.post(f"/api/v1/subjects/{held}/legal-holds", {"reason": "appeal pending, case 7/26"})

    with psycopg.connect(database_url, autocommit=True) as conn:

        def add(subject: str | None, device: str, day: str, n: int = 3) -> None:
            for i in range(n):
                conn.execute(
                    "INSERT INTO fixes (device_id, seq, t, received_at, subject_id, lat, lon,"
                    " acc, src) VALUES (%s, %s, %s::timestamptz + make_interval(hours => %s),"
                    " now(), %s, 51.1, 71.4, 5, 'gnss')",
                    (device, hash((day, i)) % 10**9, day, i, subject),
                )

        # Old chunks holding only the ended subject's data (and fixes of no subject).
        for day in ("2025-12-01", "2025-12-02", "2025-12-03"):
            add(ended, "D-ENDED", day)
            add(None, "D-LOOSE", day)
        # Later chunks shared by everyone.
        for day in ("2026-01-10", "2026-01-11"):
            for subject, device in (
                (ended, "D-ENDED"),
                (held, "D-HELD"),
                (active, "D-ACTIVE"),
                (no_order, "D-NONE"),
            ):
                add(subject, device, day)

        def count(subject: str) -> int:
            row = conn.execute(
                "SELECT count(*) FROM fixes WHERE subject_id = %s", (subject,)
            ).fetchone()
            return int(row[0]) if row else 0

        def chunks() -> int:
            row = conn.execute(
                "SELECT count(*) FROM timescaledb_information.chunks"
                " WHERE hypertable_name = 'fixes'"
            ).fetchone()
            return int(row[0]) if row else 0

        before = chunks()
        # Too early: the ended order is not yet 60 days past its end.
        assert "0 subject(s) expired" in _retention(database_url, "2026-03-15T00:00:00Z")
        assert count(ended) == 15

        out = _retention(database_url, "2026-06-01T00:00:00Z")
        assert "1 subject(s) expired" in out
        assert "3 chunk(s) dropped" in out
        assert chunks() == before - 3
        assert count(ended) == 0
        assert count(held) == 6  # legal hold
        assert count(active) == 6  # order still running
        assert count(no_order) == 6  # no order: nothing says when it ends
        loose = conn.execute("SELECT count(*) FROM fixes WHERE subject_id IS NULL").fetchone()
        assert loose == (0,)
        run = conn.execute(
            "SELECT expired_subjects::text[], chunks_dropped FROM retention_runs"
            " ORDER BY id DESC LIMIT 1"
        ).fetchone()
        assert run == ([ended], 3)
        logged = conn.execute("SELECT count(*) FROM audit_log WHERE actor = 'retention'").fetchone()
        assert logged == (2,)
