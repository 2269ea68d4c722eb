"""The operator dashboard in a real headless Chromium (Debian's, driven by Playwright),
against real servers: a simulated bracelet leaves its 500 m radius, the alert reaches the
page's map and feed (across a dropped and resumed live connection), the operator
acknowledges and resolves it with a note, and the resolution persists after a reload.

Also the map's read endpoints on their own: what they answer, to whom, and with which
justification. The screenshots go to `artifacts/` (a build artefact, gitignored)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute, expect, sync_playwright

from device_sim.device import Bracelet
from geofences.geodesy import offset
from tests.client import Api, LiveAlerts
from tests.conftest import ADMIN_PASSWORD
from tests.servers import Monitor, Mosquitto

pytestmark = pytest.mark.e2e

HOME = (76.889709, 43.238949)  # Almaty, [lon, lat]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OPERATOR = ("operator1", "operator-secret-1")
OFFICER = ("officer1", "officer-secret-1")
NOTE = "Called the subject: back home, went to the pharmacy without permission."
WAIT_MS = 30_000


@dataclass
class Scene:
    """Two subjects: A (yellow, 500 m home radius, no officer) with a bracelet, and B
    (green, an exclusion polygon, officer1's caseload) with another."""

    api: Api
    subject_a: str
    subject_b: str
    zone_b: str
    creds_a: dict[str, Any]
    state_dir: Path
    mosquitto_port: int
    t0_ms: int = field(default_factory=lambda: int(time.time() * 1000) - 240_000)

    def bracelet(self, creds: dict[str, Any]) -> Bracelet:
        device = Bracelet(
            creds["device_id"],
            "127.0.0.1",
            self.mosquitto_port,
            creds["mqtt_username"],
            creds["mqtt_password"],
            signing_key=creds["signing_key"],
            state_dir=self.state_dir / creds["device_id"],  # seq survives a reconnect
            fix_interval_s=1,
            upload_interval_s=0.2,
        )
        device.connect()
        return device

    def send(self, creds: dict[str, Any], fixes: list[tuple[int, float, float]]) -> None:
        """Fixes (ms after t0, metres east, metres north of HOME), acknowledged."""
        device = self.bracelet(creds)
        try:
            for dt_ms, east, north in fixes:
                lon, lat = offset(HOME[0], HOME[1], east, north)
                device.add_fix(self.t0_ms + dt_ms, lat, lon, acc=8.5)
            assert device.flush(30)
            assert device.wait_acked(30), f"acked up to {device.acked_upto} of {device.last_seq}"
        finally:
            device.close()


def _square(center_east: float, center_north: float, half_m: float) -> list[list[float]]:
    corners = [(-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1)]
    ring = []
    for dx, dy in corners:
        lon, lat = offset(HOME[0], HOME[1], center_east + dx * half_m, center_north + dy * half_m)
        ring.append([lon, lat])
    return ring


def _scene(monitor: Monitor, mosquitto: Mosquitto, tmp_path: Path) -> Scene:
    api = Api.login(monitor.base_url, "admin", ADMIN_PASSWORD)
    api.post(
        "/api/v1/users", {"username": OPERATOR[0], "password": OPERATOR[1], "role": "operator"}
    )
    api.post("/api/v1/users", {"username": OFFICER[0], "password": OFFICER[1], "role": "officer"})
    an_hour_ago = datetime.fromtimestamp(time.time() - 3600, UTC).isoformat()
    # The broker outlives the test (and keeps retained acks): device ids of its own.
    tag = uuid.uuid4().hex[:6].upper()

    subject_a = api.subject("IIN-900101300001", name="Aidos Serikbayev")
    api.put(
        f"/api/v1/subjects/{subject_a}/status",
        {"status": "yellow", "home": list(HOME), "effective_at": an_hour_ago},
    )
    creds_a = api.enrol(f"BR-{tag}-A", subject_a, signed=True, assigned_at=an_hour_ago)

    body = {"name": "Bolat Nurlanov", "external_id": "CASE-2026-0042", "timezone": "Asia/Almaty"}
    subject_b = str(api.post("/api/v1/subjects", {**body, "officer": OFFICER[0]})["id"])
    api.put(
        f"/api/v1/subjects/{subject_b}/status", {"status": "green", "effective_at": an_hour_ago}
    )
    zone = api.post(
        f"/api/v1/subjects/{subject_b}/zones",
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [_square(-300, 1100, 150)]},
            "properties": {"kind": "exclusion", "name": "Victim's workplace"},
        },
    )
    creds_b = api.enrol(f"BR-{tag}-B", subject_b, signed=True, assigned_at=an_hour_ago)
    scene = Scene(api, subject_a, subject_b, str(zone["id"]), creds_a, tmp_path, mosquitto.port)
    # B walks about, well clear of its exclusion zone; A is at home.
    scene.send(creds_b, [(0, -900, 500), (10_000, -920, 560), (20_000, -950, 610)])
    scene.send(creds_a, [(0, 0, 0), (10_000, 5, 3)])
    return scene


def _leave_home(scene: Scene) -> None:
    """A walks 700 m east: five violating fixes confirm a zone_exit alert."""
    scene.send(scene.creds_a, [(60_000 + i * 10_000, 700 + i * 15, 0) for i in range(5)])


# -- the read endpoints of the map -------------------------------------------------------


def test_map_endpoints_answer_what_the_map_draws(
    monitor: Monitor, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    scene = _scene(monitor, mosquitto, tmp_path)
    _leave_home(scene)
    admin = scene.api
    r = admin.http.get("/api/v1/map/subjects")
    assert r.status_code == 428, r.text  # a read of location data needs its reason

    subjects = {s["id"]: s for s in admin.get("/api/v1/map/subjects")["subjects"]}
    assert set(subjects) == {scene.subject_a, scene.subject_b}
    a, b = subjects[scene.subject_a], subjects[scene.subject_b]
    assert (a["name"], a["external_id"], a["status"]) == (
        "Aidos Serikbayev",
        "IIN-900101300001",
        "yellow",
    )
    assert a["alert"] == {
        "state": "open",
        "severity": "critical",
        "open_severity": "critical",
        "count": 1,
        "unacknowledged": 1,
    }
    east_lon, _ = offset(HOME[0], HOME[1], 760, 0)
    assert a["last_fix"]["lon"] == pytest.approx(east_lon, abs=1e-6)
    assert a["last_fix"]["t"].endswith("Z")
    [home] = a["zones"]["features"]
    assert home["geometry"] == {"type": "Point", "coordinates": list(HOME)}
    assert home["properties"]["radius_m"] == 500
    assert home["properties"]["source"] == "status"
    assert (b["status"], b["officer"], b["alert"]) == ("green", OFFICER[0], None)
    assert [z["id"] for z in b["zones"]["features"]] == [scene.zone_b]
    assert b["zones"]["features"][0]["geometry"]["type"] == "Polygon"

    track = admin.get(f"/api/v1/map/subjects/{scene.subject_a}/track", hours=24)
    assert track["truncated"] is False
    assert len(track["fixes"]["features"]) == 7
    times = [f["properties"]["t"] for f in track["fixes"]["features"]]
    assert times == sorted(times)
    assert track["line"]["geometry"]["type"] == "LineString"
    assert len(track["line"]["geometry"]["coordinates"]) == 7
    assert [al["kind"] for al in track["alerts"]] == ["zone_exit"]
    assert admin.get(f"/api/v1/map/subjects/{scene.subject_a}/track", hours=0.001)["line"] is None

    # An officer sees their caseload only; the rest does not exist for them.
    officer = Api.login(monitor.base_url, *OFFICER)
    listed = officer.get("/api/v1/map/subjects")["subjects"]
    assert [s["id"] for s in listed] == [scene.subject_b]
    officer.get(f"/api/v1/map/subjects/{scene.subject_a}/track", expect=404)
    officer.get(f"/api/v1/map/subjects/{scene.subject_b}/track")
    assert httpx.get(f"{monitor.base_url}/api/v1/map/subjects").status_code == 401
    officer.http.close()
    admin.http.close()


# -- the page in a real browser ----------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


class Link:
    """The page's live websocket, routed through the test so that it can be cut."""

    def __init__(self) -> None:
        self.down = False
        self.urls: list[str] = []
        self.current: WebSocketRoute | None = None

    def handle(self, ws: WebSocketRoute) -> None:
        self.urls.append(ws.url)
        if self.down:
            ws.close(code=1013, reason="test: the network is down")
            return
        ws.connect_to_server()
        self.current = ws

    def cut(self) -> None:
        self.down = True
        assert self.current is not None
        self.current.close(code=1012, reason="test: the network dropped")


def _marker(page: Page, subject_id: str) -> Any:
    return page.locator(f'path.subject-marker[data-subject-id="{subject_id}"]')


def test_operator_handles_a_violation_on_the_dashboard(
    monitor: Monitor, mosquitto: Mosquitto, browser: Browser, tmp_path: Path
) -> None:
    scene = _scene(monitor, mosquitto, tmp_path)
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    link = Link()
    page.route_web_socket(re.compile(r"/api/v1/alerts/live"), link.handle)

    # Log in through the page.
    page.goto(monitor.base_url)
    page.fill("#username", OPERATOR[0])
    page.fill("#password", "wrong password")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_have_text("wrong username or password")
    page.fill("#password", OPERATOR[1])
    page.click("#login-submit")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(page.locator("#who")).to_have_text(OPERATOR[0])
    errors.clear()  # the refused login above logs its 401; nothing else may fail

    # Both subjects on the map (no tiles configured): positions, status colours, zones.
    expect(page.locator("#map")).to_have_attribute("data-tiles", "off")
    marker_a, marker_b = _marker(page, scene.subject_a), _marker(page, scene.subject_b)
    expect(marker_a).to_have_attribute("data-status", "yellow")
    expect(marker_a).to_have_attribute("data-alert", "none")
    expect(marker_b).to_have_attribute("data-status", "green")
    home = page.locator(f'path.zone[data-subject-id="{scene.subject_a}"][data-zone-kind="home"]')
    expect(home).to_have_count(1)
    expect(page.locator(f'path.zone[data-zone-id="{scene.zone_b}"]')).to_have_count(1)
    expect(page.locator("#feed-empty")).to_be_visible()
    expect(page.locator("#count-subjects")).to_have_text("2")

    # The live connection drops; the page says so and keeps trying.
    link.cut()
    banner = page.locator("#banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("connection lost — reconnecting")
    expect(page.locator("#conn")).to_have_attribute("data-state", re.compile("lost|connecting"))

    # Meanwhile the bracelet leaves the 500 m radius: the alert exists, the page is cut off.
    watcher = LiveAlerts(monitor.base_url, scene.api.token)
    assert watcher.next()["type"] == "snapshot"
    _leave_home(scene)
    alert = watcher.wait_for(lambda m: m["type"] == "alert", timeout=30)["alert"]
    watcher.close()
    assert (alert["kind"], alert["severity"], alert["state"]) == ("zone_exit", "critical", "open")
    final = scene.api.get(f"/api/v1/alerts/{alert['id']}")
    row = page.locator(f'#feed li[data-alert-id="{alert["id"]}"]')
    expect(row).to_have_count(0)

    # The network is back: the page resumes after the last event it saw, missing nothing.
    link.down = False
    expect(row).to_be_visible(timeout=WAIT_MS)
    expect(banner).to_be_hidden()
    assert "after=" in link.urls[-1], link.urls
    expect(row).to_have_attribute("data-state", "open")
    expect(row).to_have_attribute("data-severity", "critical")
    expect(row).to_have_attribute("data-event-id", str(final["event_id"]))
    expect(row).to_contain_text("zone exit")
    expect(row).to_contain_text("Aidos Serikbayev")
    expect(page.locator("body")).to_have_attribute("data-beeps", "1")  # one new critical
    expect(page.locator("#count-unack")).to_have_text("1")
    # The marker moved to where the alert says A is, outlined for an open critical alert.
    expect(marker_a).to_have_attribute("data-alert", "open")
    expect(marker_a).to_have_attribute("data-severity", "critical")
    expect(marker_a).to_have_class(re.compile(r"\bpulse\b"))
    assert float(marker_a.get_attribute("data-lon") or 0) > HOME[0] + 0.008  # ~700 m east

    # The subject panel: details, rules, the last 24 h track replayed, alert history.
    row.locator(".kind").click()
    panel = page.locator("#panel")
    expect(panel).to_have_attribute("data-state", "ready")
    expect(panel).to_have_attribute("data-subject-id", scene.subject_a)
    expect(page.locator("#panel-name")).to_have_text("Aidos Serikbayev")
    expect(page.locator('#panel [data-role="status"]')).to_have_text("yellow")
    expect(page.locator("#panel-rules li")).to_contain_text(["must stay inside status home"])
    expect(panel).to_have_attribute("data-fixes", "7")
    expect(page.locator('path[data-role="track"]')).to_have_count(1)
    history = page.locator(f'#panel-alerts tr[data-alert-id="{alert["id"]}"]')
    expect(history).to_have_attribute("data-state", "open")
    page.click("#replay")
    expect(page.locator("#replay")).to_have_attribute("data-replay", "done", timeout=WAIT_MS)
    expect(page.locator("path.replay-marker")).to_have_count(0)

    # The whole picture for the artefact: every subject and zone, the panel open.
    page.click("#fit")
    expect(_marker(page, scene.subject_b)).to_be_in_viewport()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"))

    # Acknowledge.
    row.locator('button[data-action="acknowledge"]').click()
    expect(row).to_have_attribute("data-state", "acknowledged")
    expect(row).to_contain_text(f"acknowledged by {OPERATOR[0]}")
    expect(marker_a).to_have_attribute("data-alert", "acknowledged")
    expect(row.locator('button[data-action="acknowledge"]')).to_have_count(0)

    # Resolve: a note is required, typed inline.
    row.locator('button[data-action="resolve"]').click()
    note = row.locator('input[data-role="note"]')
    expect(note).to_be_focused()
    row.locator('button[data-action="confirm-resolve"]').click()
    expect(row.locator('[data-role="error"]')).to_have_text(
        "A note is required to resolve an alert."
    )
    assert scene.api.get(f"/api/v1/alerts/{alert['id']}")["state"] == "acknowledged"
    note.fill(NOTE)
    row.locator('button[data-action="confirm-resolve"]').click()
    expect(row).to_have_attribute("data-state", "resolved")
    expect(row).to_contain_text(NOTE)
    expect(marker_a).to_have_attribute("data-alert", "none")
    expect(page.locator("#count-open")).to_have_text("0")

    # After a reload the resolution stands: not in the open feed, resolved in the history.
    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(page.locator("#feed-empty")).to_be_visible()
    expect(page.locator("#feed li")).to_have_count(0)
    expect(marker_a).to_have_attribute("data-alert", "none")
    marker_a.click()
    expect(panel).to_have_attribute("data-state", "ready")
    expect(history).to_have_attribute("data-state", "resolved")
    expect(history).to_contain_text(NOTE)
    page.screenshot(path=str(ARTIFACTS / "dashboard-after-reload.png"))

    resolved = scene.api.get("/api/v1/alerts", state="resolved")["items"]
    assert [a["id"] for a in resolved] == [alert["id"]]
    assert resolved[0]["detail"]["resolution_note"] == NOTE
    assert resolved[0]["detail"]["resolved_by"] == OPERATOR[0]
    # Logging out ends the session on the server as well.
    token = page.evaluate("sessionStorage.getItem('token')")
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    r = httpx.get(
        f"{monitor.base_url}/api/v1/map/subjects",
        headers={"Authorization": f"Bearer {token}", "X-Access-Reason": "test"},
    )
    assert r.status_code == 401
    assert errors == []
    context.close()
    scene.api.http.close()
