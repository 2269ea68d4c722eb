"""Officer review and evidence through the real service: a bracelet leaves its home
radius, an operator handles the alert, and the officer reviews the violation, exports
the record, prints the court report and takes an evidence bundle twice."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pypdf
import pytest

from device_sim.device import Bracelet
from geofences.geodesy import offset
from monitor.reports import verify_bundle
from tests.client import REASON, Api
from tests.conftest import ADMIN_PASSWORD
from tests.servers import Monitor, Mosquitto, wait_for

pytestmark = pytest.mark.integration

HOME = (76.889709, 43.238949)  # Almaty, [lon, lat]
NAME = "Иванов Иван Иванович"
NOTE = 'Called the subject: "went to the pharmacy", back at 13:20,\nwarned in person.'
ENDPOINTS = (
    "violations",
    "export/fixes.csv",
    "export/fixes.geojson",
    "export/alerts.csv",
    "export/alerts.geojson",
    "report.pdf",
    "evidence.zip",
)


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _user(admin: Api, base: str, name: str, role: str) -> Api:
    admin.post("/api/v1/users", {"username": name, "password": f"{name}-secret-pw", "role": role})
    return Api.login(base, name, f"{name}-secret-pw")


ONE_EXCURSION = [(0.0, 0.0)] * 2 + [(700.0, 0.0)] * 5 + [(0.0, 0.0)] * 2


def _violate(
    admin: Api,
    officer: Api,
    mosquitto: Mosquitto,
    subject_id: str,
    track: list[tuple[float, float]] = ONE_EXCURSION,
    excursions: int = 1,
    device_id: str = "BR-REP1",
) -> tuple[list[datetime], list[dict[str, Any]]]:
    """A yellow status, a bracelet and its `track` (metres east and north of home, one
    fix every 10 s, starting 3 min ago); the zone_exit alerts, oldest first, once
    each is cleared (the default: two fixes at home, five 700 m east, two back). The
    broker is shared by the session's tests and keeps each device's last ack: every test
    takes a device id of its own."""
    an_hour_ago = iso(datetime.now(UTC) - timedelta(hours=1))
    officer.put(
        f"/api/v1/subjects/{subject_id}/status",
        {"status": "yellow", "home": list(HOME), "effective_at": an_hour_ago},
    )
    creds = admin.enrol(device_id, subject_id, signed=True, assigned_at=an_hour_ago)
    device = Bracelet(
        device_id,
        "127.0.0.1",
        mosquitto.port,
        creds["mqtt_username"],
        creds["mqtt_password"],
        signing_key=creds["signing_key"],
        fix_interval_s=1,
        upload_interval_s=0.2,
    )
    start_ms = int(datetime.now(UTC).timestamp() * 1000) - 180_000  # 3 min ago
    times = []
    device.connect()
    try:
        for i, (east, north) in enumerate(track):
            lon, lat = offset(HOME[0], HOME[1], east, north)
            t_ms = start_ms + i * 10_000
            times.append(datetime.fromtimestamp(t_ms / 1000, UTC))
            device.add_fix(t_ms, lat, lon, acc=8.5)
        assert device.flush(30)
        assert device.wait_acked(30), f"acked up to {device.acked_upto} of {device.last_seq}"
    finally:
        device.close()

    found: list[dict[str, Any]] = []

    def cleared() -> bool:
        items = officer.get("/api/v1/alerts", subject_id=subject_id)["items"]
        found[:] = sorted(
            (a for a in items if a["kind"] == "zone_exit"), key=lambda a: a["fix_time"]
        )
        return len(found) == excursions and all("cleared_at" in a["detail"] for a in found)

    wait_for(cleared, 30, f"{excursions} zone_exit alert(s), cleared")
    return times, found


def test_officer_review_exports_report_and_evidence(
    monitor: Monitor, mosquitto: Mosquitto, database_url: str
) -> None:
    base = monitor.base_url
    admin = Api.login(base, "admin", ADMIN_PASSWORD)
    officer = _user(admin, base, "officer_a", "officer")
    other_officer = _user(admin, base, "officer_b", "officer")
    auditor = _user(admin, base, "auditor_a", "auditor")
    operator = _user(admin, base, "operator_a", "operator")
    subject_id = officer.subject("IIN-900101300777", name=NAME)
    officer.post(
        f"/api/v1/subjects/{subject_id}/orders",
        {
            "authority": "Almaty district court",
            "reference": "2-1234/2026",
            "starts_at": iso(datetime.now(UTC) - timedelta(days=1)),
        },
    )
    times, [alert] = _violate(admin, officer, mosquitto, subject_id)

    operator.post(f"/api/v1/alerts/{alert['id']}/acknowledge", {}, expect=200)
    officer.post(f"/api/v1/alerts/{alert['id']}/resolve", {"note": NOTE}, expect=200)

    since = times[0] - timedelta(hours=1)
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    period = {"since": iso(since), "until": iso(until)}
    prefix = f"/api/v1/subjects/{subject_id}"

    # Every endpoint wants a reason (428), refuses the auditor (403) and hides the
    # subject from another officer (404).
    for path in ENDPOINTS:
        r = officer.http.get(f"{prefix}/{path}", params=period)
        assert r.status_code == 428, (path, r.status_code, r.text)
        assert "X-Access-Reason" in r.json()["detail"]
        r = auditor.http.get(f"{prefix}/{path}", params=period, headers=REASON)
        assert r.status_code == 403, (path, r.status_code, r.text)
        r = other_officer.http.get(f"{prefix}/{path}", params=period, headers=REASON)
        assert r.status_code == 404, (path, r.status_code, r.text)
    r = officer.http.get(
        f"{prefix}/violations", params={"since": iso(until), "until": iso(since)}, headers=REASON
    )
    assert r.status_code == 422

    # The violation, with the fixes around it, the rule in force and the notes.
    review = officer.get(f"{prefix}/violations", **period)
    assert review["subject"]["name"] == NAME
    assert review["next"] is None
    [v] = review["violations"]
    assert v["alert"]["id"] == alert["id"]
    assert v["alert"]["fix_time"] == iso(times[2])
    fixes = v["fixes"]["features"]
    assert [f["properties"]["t"] for f in fixes] == [iso(t) for t in times]
    assert [f["properties"]["violating"] for f in fixes] == [False] * 2 + [True] * 5 + [False] * 2
    assert fixes[2]["properties"]["margin_m"] == pytest.approx(200.0, abs=1.0)
    rule = v["rule"]
    assert rule["key"].startswith("status:")
    assert rule["kind"] == "zone_exit"
    assert rule["must_be_inside"] is True
    assert rule["zone"]["geometry"] == {"type": "Point", "coordinates": list(HOME)}
    assert rule["zone"]["properties"]["radius_m"] == 500
    assert rule["order"]["status"] == "yellow"
    assert "500 m" in rule["description"]
    notes = v["notes"]
    assert notes["state"] == "resolved"
    assert notes["resolution_note"] == NOTE
    assert notes["acknowledged_by"] == "operator_a"
    assert notes["resolved_by"] == "officer_a"
    assert notes["cleared_at"] == iso(times[7])
    history = [(h["change"], h["actor"]) for h in notes["history"]]
    assert history[0] == ("opened", None)
    assert ("acknowledged", "operator_a") in history
    assert history[-1] == ("resolved", "officer_a")
    # A period before it holds none.
    early = officer.get(f"{prefix}/violations", since=iso(since), until=iso(times[0]))
    assert early["violations"] == []

    # Exports parse, with a stable header, UTC times, and the note quoted intact.
    r = officer.http.get(f"{prefix}/export/fixes.csv", params=period, headers=REASON)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.content.decode(), newline="")))
    assert rows[0] == [
        "t",
        "received_at",
        "device_id",
        "seq",
        "lat",
        "lon",
        "acc",
        "src",
        "spd",
        "batt",
    ]
    assert [row[0] for row in rows[1:]] == [iso(t) for t in times]
    assert {row[2] for row in rows[1:]} == {"BR-REP1"}
    assert [row[6] for row in rows[1:]] == ["8.5"] * 9

    r = officer.http.get(f"{prefix}/export/fixes.geojson", params=period, headers=REASON)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/geo+json")
    doc = r.json()
    assert doc["type"] == "FeatureCollection"
    assert [f["properties"]["seq"] for f in doc["features"]] == list(range(1, 10))
    assert doc["features"][0]["geometry"]["type"] == "Point"

    r = officer.http.get(f"{prefix}/export/alerts.csv", params=period, headers=REASON)
    assert r.status_code == 200
    rows = list(csv.reader(io.StringIO(r.content.decode(), newline="")))
    table = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    [exported] = [a for a in table if a["id"] == alert["id"]]
    assert exported["kind"] == "zone_exit"
    assert exported["state"] == "resolved"
    assert exported["resolution_note"] == NOTE
    assert exported["fix_time"] == iso(times[2])

    r = officer.http.get(f"{prefix}/export/alerts.geojson", params=period, headers=REASON)
    assert r.status_code == 200
    features = {f["id"]: f for f in r.json()["features"]}
    assert features[alert["id"]]["geometry"]["type"] == "Point"
    assert features[alert["id"]]["properties"]["detail"]["resolution_note"] == NOTE

    # The court report.
    r = officer.http.get(
        f"{prefix}/report.pdf", params=period, headers={"X-Access-Reason": "hearing 2026/77"}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    reader = pypdf.PdfReader(io.BytesIO(r.content))
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert NAME in text
    assert "IIN-900101300777" in text
    assert times[2].strftime("%Y-%m-%d %H:%M:%S UTC") in text
    assert "hearing 2026/77" in text
    assert "2-1234/2026" in text  # the order
    assert "Almaty district" in text  # (the cell wraps before "court")
    assert "must stay within 500 m of the home" in text
    assert f"Page 1 of {len(reader.pages)}" in text

    # The evidence bundle: the same bytes twice, intact, and any changed byte caught.
    first = officer.http.get(f"{prefix}/evidence.zip", params=period, headers=REASON)
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "application/zip"
    second = operator.http.get(
        f"{prefix}/evidence.zip", params=period, headers={"X-Access-Reason": "another reason"}
    )
    assert second.status_code == 200
    assert first.content == second.content
    assert first.headers["x-evidence-sha256"] == hashlib.sha256(first.content).hexdigest()
    assert verify_bundle(first.content) == []
    with zipfile.ZipFile(io.BytesIO(first.content)) as zf:
        names = zf.namelist()
        manifest = json.loads(zf.read("manifest.json"))
        bundled_pdf = zf.read("report.pdf")
        fixes_csv = zf.read("fixes.csv")
    assert names == [
        "manifest.json",
        "fixes.csv",
        "fixes.geojson",
        "alerts.csv",
        "alerts.geojson",
        "report.pdf",
    ]
    assert manifest["subject"]["id"] == subject_id
    assert manifest["range"] == {"since": iso(since), "until": iso(until)}
    assert manifest["counts"]["fixes"] == 9
    assert manifest["counts"]["violations"] == 1
    assert NAME in "\n".join(
        p.extract_text() for p in pypdf.PdfReader(io.BytesIO(bundled_pdf)).pages
    )
    offset_of_csv = first.content.index(fixes_csv)
    for where in (offset_of_csv + len(fixes_csv) // 2, len(first.content) // 2, 10):
        damaged = bytearray(first.content)
        damaged[where] ^= 0x01
        assert verify_bundle(bytes(damaged)), f"a changed byte at {where} went unnoticed"

    # Every read is in the consultation log, with what and the period.
    with psycopg.connect(database_url) as conn:
        logged = conn.execute(
            "SELECT actor, object_type, object_id, reason, range_from, range_until FROM audit_log"
            " WHERE subject_id = %s AND action = 'read' AND reason IS NOT NULL ORDER BY id",
            (subject_id,),
        ).fetchall()
    reads = {(actor, what) for actor, what, *_ in logged}
    for what in (
        "violations",
        "export fixes.csv",
        "export fixes.geojson",
        "export alerts.csv",
        "export alerts.geojson",
        "report report.pdf",
        "export evidence.zip",
    ):
        assert ("officer_a", what) in reads, what
    assert ("operator_a", "export evidence.zip") in reads
    for _actor, what, object_id, reason, range_from, range_until in logged:
        if what == "export evidence.zip":
            assert object_id == f"sha256:{hashlib.sha256(first.content).hexdigest()}"
            assert reason in (REASON["X-Access-Reason"], "another reason")
        if what.startswith(("export", "report")):
            assert range_from == since
            assert range_until == until
    # Refused reads are not logged as consultations.
    assert not any(actor in ("auditor_a", "officer_b") for actor, *_ in logged)


def test_an_empty_period_exports_empty_files(monitor: Monitor) -> None:
    api = Api.login(monitor.base_url, "admin", ADMIN_PASSWORD)
    subject_id = api.subject("IIN-900101300778")
    prefix = f"/api/v1/subjects/{subject_id}"
    period = {"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z"}
    assert api.get(f"{prefix}/violations", **period)["violations"] == []
    r = api.http.get(f"{prefix}/export/fixes.csv", params=period, headers=REASON)
    assert r.content == b"t,received_at,device_id,seq,lat,lon,acc,src,spd,batt\r\n"
    r = api.http.get(f"{prefix}/export/alerts.geojson", params=period, headers=REASON)
    assert r.json() == {"type": "FeatureCollection", "features": []}
    r = api.http.get(f"{prefix}/report.pdf", params=period, headers=REASON)
    assert r.status_code == 200
    text = "\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(r.content)).pages)
    assert "No violation in the period." in text
    first = api.http.get(f"{prefix}/evidence.zip", params=period, headers=REASON)
    again = httpx.get(
        f"{monitor.base_url}{prefix}/evidence.zip",
        params=period,
        headers={**REASON, "Authorization": f"Bearer {api.token}"},
    )
    assert first.content == again.content
    assert verify_bundle(first.content) == []
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(first.content)).read("manifest.json"))
    assert manifest["counts"] == {"fixes": 0, "alerts": 0, "violations": 0}
    assert manifest["as_of"] == "2026-01-02T00:00:00.000Z"  # no record: the period's end


def test_violations_page_oldest_first_and_filter_by_kind(
    monitor: Monitor, mosquitto: Mosquitto
) -> None:
    admin = Api.login(monitor.base_url, "admin", ADMIN_PASSWORD)
    subject_id = admin.subject("IIN-900101300779")
    out_and_back = [(700.0, 0.0)] * 5 + [(0.0, 0.0)] * 2
    track = [(0.0, 0.0)] * 2 + out_and_back * 2
    times, alerts = _violate(
        admin, admin, mosquitto, subject_id, track, excursions=2, device_id="BR-REP2"
    )
    prefix = f"/api/v1/subjects/{subject_id}"
    page = admin.get(f"{prefix}/violations", limit=1)
    assert [v["alert"]["id"] for v in page["violations"]] == [alerts[0]["id"]]
    assert page["next"] is not None
    rest = admin.get(f"{prefix}/violations", limit=1, cursor=page["next"])
    assert [v["alert"]["id"] for v in rest["violations"]] == [alerts[1]["id"]]
    assert rest["next"] is None
    # The second excursion's window reaches back to the first: its fixes are all there.
    second = rest["violations"][0]
    assert second["alert"]["fix_time"] == iso(times[9])
    assert len(second["fixes"]["features"]) == len(times)
    assert admin.get(f"{prefix}/violations", kind="tamper")["violations"] == []
    both = admin.get(f"{prefix}/violations", kind=["zone_exit", "tamper"])
    assert len(both["violations"]) == 2
    r = admin.http.get(f"{prefix}/violations", params={"cursor": "nonsense"}, headers=REASON)
    assert r.status_code == 422
