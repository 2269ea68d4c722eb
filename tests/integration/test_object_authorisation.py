"""No broken object-level authorisation: every endpoint in the OpenAPI document, called
with a second officer's token against the first officer's subject (and its device and
alert), is refused, and no collection lists what belongs to the first officer."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.client import REASON, Api
from tests.conftest import ADMIN_PASSWORD
from tests.servers import Monitor, Mosquitto, wait_for

pytestmark = pytest.mark.integration

# Valid bodies, so that a refusal comes from authorisation and not from validation.
BODIES: dict[tuple[str, str], Any] = {
    ("patch", "/api/v1/subjects/{subject_id}"): {"name": "Stolen"},
    ("put", "/api/v1/subjects/{subject_id}/status"): {"status": "green"},
    ("post", "/api/v1/subjects/{subject_id}/zones"): {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [71.43, 51.13]},
        "properties": {"kind": "home", "radius_m": 100},
    },
    ("post", "/api/v1/devices/{device_id}/commands"): {"cmd": "vibrate"},
    ("post", "/api/v1/alerts/{alert_id}/resolve"): {"note": "not mine"},
    ("post", "/api/v1/users"): {
        "username": "sneaky",
        "password": "sneaky-pw-1",
        "role": "administrator",
    },
    ("post", "/api/v1/subjects/{subject_id}/orders"): {
        "authority": "court",
        "reference": "r-1",
        "starts_at": "2026-01-01T00:00:00Z",
    },
    ("patch", "/api/v1/orders/{order_id}"): {"notes": "changed"},
    ("post", "/api/v1/subjects/{subject_id}/proximity-rules"): {
        "device_id": "BR-BOLA",
        "distance_m": 100,
    },
    ("post", "/api/v1/subjects/{subject_id}/legal-holds"): {"reason": "not my case"},
    ("post", "/api/v1/subjects/{subject_id}/suspensions"): {
        "starts_at": "2026-01-01T00:00:00Z",
        "ends_at": "2026-01-02T00:00:00Z",
        "reason": "not my case",
    },
}
# Endpoints about the caller's own account or session, or shared reference data (zone
# sets such as every airport), not about anyone's subject.
OWN = {
    "/api/v1/zone-sets/{name}/zones",
    "/api/v1/zone-sets/{name}/import",
    "/api/v1/auth/token",
    "/api/v1/auth/logout",
    "/api/v1/users/me/totp",
    "/api/v1/users/me/totp/confirm",
    "/healthz",
}


def _officer(admin: Api, base: str, name: str) -> Api:
    admin.post(
        "/api/v1/users", {"username": name, "password": f"{name}-secret-pw", "role": "officer"}
    )
    return Api.login(base, name, f"{name}-secret-pw")


def test_a_second_officer_is_refused_everywhere(monitor: Monitor, mosquitto: Mosquitto) -> None:
    admin = Api.login(monitor.base_url, "admin", ADMIN_PASSWORD)
    first = _officer(admin, monitor.base_url, "officer_a")
    second = _officer(admin, monitor.base_url, "officer_b")
    subject = first.post(
        "/api/v1/subjects",
        {"name": "A's subject", "external_id": "BOLA-1", "timezone": "Asia/Almaty"},
    )["id"]
    first.enrol("BR-BOLA", subject, signed=True, assigned_at="2026-01-01T00:00:00Z")
    # An alert of the first officer's subject: an unsigned upload to a signed device.
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="BR-BOLA", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    t = int(datetime.now(UTC).timestamp() * 1000)
    client.publish(
        "em/v1/dev/BR-BOLA/up",
        json.dumps(
            {"fixes": [{"seq": 1, "t": t, "lat": 51.13, "lon": 71.43, "acc": 5, "src": "gnss"}]}
        ),
        qos=1,
    ).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()
    wait_for(lambda: first.get("/api/v1/alerts")["items"], 30, "the integrity alert")
    alert = first.get("/api/v1/alerts")["items"][0]["id"]

    order = first.post(
        f"/api/v1/subjects/{subject}/orders",
        BODIES[("post", "/api/v1/subjects/{subject_id}/orders")],
    )["id"]
    hold = first.post(f"/api/v1/subjects/{subject}/legal-holds", {"reason": "appeal"})["id"]
    suspension = first.post(
        f"/api/v1/subjects/{subject}/suspensions",
        BODIES[("post", "/api/v1/subjects/{subject_id}/suspensions")],
    )["id"]
    values = {
        "subject_id": subject,
        "device_id": "BR-BOLA",
        "alert_id": alert,
        "external_id": "BOLA-1",
        "username": "officer_a",
        "order_id": order,
        "hold_id": str(hold),
        "suspension_id": str(suspension),
    }
    spec = httpx.get(f"{monitor.base_url}/openapi.json").json()
    checked = 0
    for template, operations in spec["paths"].items():
        if template in OWN:
            continue
        for method in operations:
            path = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)
            r = second.http.request(
                method.upper(),
                path,
                headers=REASON,
                json=BODIES.get((method, template)),
                params={"subject_id": subject} if method == "get" and "{" not in template else None,
            )
            where = f"{method.upper()} {template} -> {r.status_code} {r.text[:200]}"
            if "{" in template:
                assert r.status_code in (403, 404), where
            elif r.status_code < 400:
                # A collection (filtered by A's subject where it takes the filter): it
                # may answer, but nothing of A's may be in it.
                assert method == "get", where
                assert subject not in r.text, where
                assert alert not in r.text, where
            else:
                assert r.status_code in (403, 404, 422), where
            checked += 1
    # And without the filter, no list shows the first officer's data.
    for template, operations in spec["paths"].items():
        if "get" in operations and "{" not in template and template not in OWN:
            r = second.http.get(template, headers=REASON)
            assert subject not in r.text, f"GET {template} lists A's subject"
    assert checked >= 15, f"only {checked} endpoints checked"
    # The first officer, and only the first, still sees it all.
    assert first.get(f"/api/v1/subjects/{subject}")["name"] == "A's subject"
