"""Accounts (lockout, second factor) and the hash-chained, append-only audit log."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import psycopg
import pytest

from monitor.api import totp
from tests.client import Api
from tests.conftest import ADMIN_PASSWORD
from tests.servers import Monitor

pytestmark = pytest.mark.integration


def _login(base: str, username: str, password: str, otp: str | None = None) -> httpx.Response:
    data = {"username": username, "password": password}
    if otp is not None:
        data["otp"] = otp
    return httpx.post(f"{base}/api/v1/auth/token", data=data, timeout=10)


def test_five_failures_lock_the_account_until_an_administrator_releases_it(
    monitor: Monitor,
) -> None:
    admin = Api.login(monitor.base_url, "admin", ADMIN_PASSWORD)
    admin.post(
        "/api/v1/users", {"username": "op1", "password": "op1-secret-pw", "role": "operator"}
    )
    op = Api.login(monitor.base_url, "op1", "op1-secret-pw")
    for _ in range(5):
        assert _login(monitor.base_url, "op1", "wrong-guess").status_code == 401
    locked = _login(monitor.base_url, "op1", "op1-secret-pw")
    assert locked.status_code == 401
    assert "locked" in locked.json()["detail"]
    # The open session ends with the lock too.
    assert op.http.get("/api/v1/alerts", headers={"X-Access-Reason": "x"}).status_code == 401
    admin.post("/api/v1/users/op1/unlock", {}, expect=200)
    assert _login(monitor.base_url, "op1", "op1-secret-pw").status_code == 200


def test_a_second_factor_code_is_required_and_accepted_once(monitor: Monitor) -> None:
    admin = Api.login(monitor.base_url, "admin", ADMIN_PASSWORD)
    admin.post(
        "/api/v1/users", {"username": "off1", "password": "off1-secret-pw", "role": "officer"}
    )
    officer = Api.login(monitor.base_url, "off1", "off1-secret-pw")
    secret = officer.post("/api/v1/users/me/totp", {}, expect=200)["secret"]
    step = int(time.time() // totp.STEP_S)
    officer.post("/api/v1/users/me/totp/confirm", {"otp": totp.code_at(secret, step)}, expect=200)
    assert _login(monitor.base_url, "off1", "off1-secret-pw").status_code == 401
    # The code used to confirm cannot be used again; the next step's can, once.
    again = _login(monitor.base_url, "off1", "off1-secret-pw", totp.code_at(secret, step))
    assert again.status_code == 401
    fresh = totp.code_at(secret, step + 1)
    assert _login(monitor.base_url, "off1", "off1-secret-pw", fresh).status_code == 200
    assert _login(monitor.base_url, "off1", "off1-secret-pw", fresh).status_code == 401


def _verify(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MONITOR_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_audit_log_records_reads_and_changes_and_detects_tampering(
    monitor: Monitor, database_url: str
) -> None:
    admin = Api.login(monitor.base_url, "admin", ADMIN_PASSWORD)
    subject = admin.subject("AUD-1")
    admin.http.patch(f"/api/v1/subjects/{subject}", json={"name": "Renamed"}).raise_for_status()
    admin.get(f"/api/v1/subjects/{subject}/fixes", since="2026-11-01T00:00:00Z")
    admin.post(
        "/api/v1/users", {"username": "aud1", "password": "aud1-secret-pw", "role": "auditor"}
    )
    auditor = Api.login(monitor.base_url, "aud1", "aud1-secret-pw")
    entries = auditor.get("/api/v1/audit", subject_id=subject)["items"]
    actions = [(e["action"], e["object_type"]) for e in entries]
    assert ("create", "subject") in actions
    assert ("read", "fixes") in actions
    update = next(e for e in entries if e["action"] == "update")
    assert update["before"]["name"] == "Test Subject"
    assert update["after"]["name"] == "Renamed"
    read = next(e for e in entries if e["action"] == "read")
    assert read["reason"] == "test case 2026/001"
    assert read["range_from"] == "2026-11-01T00:00:00.000Z"
    # An auditor reads the log and nothing else.
    assert (
        auditor.http.get(
            f"/api/v1/subjects/{subject}", headers={"X-Access-Reason": "x"}
        ).status_code
        == 403
    )

    ok = _verify(database_url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "intact" in ok.stdout

    with psycopg.connect(database_url, autocommit=True) as conn:
        for statement in (
            "UPDATE audit_log SET actor = 'nobody'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)
        # A superuser can go behind the triggers' back; the chain still tells.
        victim = conn.execute(
            "SELECT id FROM audit_log WHERE action = 'update' ORDER BY id LIMIT 1"
        ).fetchone()
        assert victim is not None
        conn.execute("SET session_replication_role = replica")
        conn.execute('UPDATE audit_log SET after = \'{"name": "Forged"}\' WHERE id = %s', victim)
    broken = _verify(database_url)
    assert broken.returncode == 1
    assert f"BROKEN at record {victim[0]}" in broken.stdout
