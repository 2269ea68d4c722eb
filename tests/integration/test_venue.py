"""The venue check: the colour and when it was valid, nothing else; by ID number or by a
short-lived signed code; rate-limited; audited."""

from __future__ import annotations

import pytest

from tests.client import Api
from tests.conftest import ADMIN_PASSWORD
from tests.servers import Monitor

pytestmark = pytest.mark.integration


def test_venue_check_by_id_and_by_code(monitor: Monitor) -> None:
    admin = Api.login(monitor.base_url, "admin", ADMIN_PASSWORD)
    subject = admin.subject("880101300123")
    admin.put(
        f"/api/v1/subjects/{subject}/status", {"status": "yellow", "home": [76.889709, 43.238949]}
    )
    admin.post("/api/v1/users", {"username": "door1", "password": "door1-secret", "role": "venue"})
    door = Api.login(monitor.base_url, "door1", "door1-secret")

    answer = door.get("/api/v1/status/880101300123")
    assert set(answer) == {"status", "valid_at"}
    assert answer["status"] == "yellow"
    # Nobody has this IIN: answered exactly as a subject without restriction is, so the
    # check never tells who is monitored (it was a 404 against a 200).
    free = admin.subject("900202400456")
    admin.put(f"/api/v1/subjects/{free}/status", {"status": "green"})
    unknown = door.http.get("/api/v1/status/000000000000")
    known_free = door.http.get("/api/v1/status/900202400456")
    assert unknown.status_code == known_free.status_code == 200
    assert set(unknown.json()) == set(known_free.json()) == {"status", "valid_at"}
    assert unknown.json()["status"] == known_free.json()["status"] == "green"
    # The venue role sees nothing else.
    assert (
        door.http.get(f"/api/v1/subjects/{subject}", headers={"X-Access-Reason": "x"}).status_code
        == 403
    )

    code = admin.post(f"/api/v1/subjects/{subject}/status-code", {}, expect=200)["code"]
    assert door.get(f"/api/v1/status/{code}")["status"] == "yellow"
    forged = code[:-2] + ("AA" if not code.endswith("AA") else "BB")
    assert door.http.get(f"/api/v1/status/{forged}").status_code == 404

    checks = admin.get("/api/v1/audit", subject_id=subject)["items"]
    assert sum(1 for c in checks if c["actor"] == "door1" and c["object_type"] == "status") == 2


def test_venue_checks_are_rate_limited(monitor: Monitor) -> None:
    admin = Api.login(monitor.base_url, "admin", ADMIN_PASSWORD)
    admin.post("/api/v1/users", {"username": "door2", "password": "door2-secret", "role": "venue"})
    door = Api.login(monitor.base_url, "door2", "door2-secret")
    codes = [door.http.get(f"/api/v1/status/nobody-{i}").status_code for i in range(70)]
    assert codes[:60] == [200] * 60
    assert codes[-1] == 429
