"""The scenarios without a backend: enrolment answered by a fake operator API, records
made into journals (nothing connects), expectations written. Same seed and anchor,
same records, byte for byte."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from device_sim.api import OperatorClient
from device_sim.expect import AlertExpectation, ExpectFile, ms_of
from device_sim.fleet import Broker
from device_sim.scenarios import SCENARIOS, Context
from device_sim.scenarios.base import Scenario

ANCHOR = 1_795_000_000_000  # 2026-11-18T...Z
KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"


class FakeApi(OperatorClient):
    """Answers enrolment calls the way the operator API does, and keeps them."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:1")
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self._n = 0

    def _call_once(
        self, method: str, path: str, data: bytes | None, headers: Mapping[str, str]
    ) -> dict[str, Any]:
        body = json.loads(data) if data else {}
        self.calls.append((method, path, body))
        self._n += 1
        if path == "/api/v1/subjects":
            return {"id": f"subject-{self._n}"}
        if path.endswith("/zones"):
            return {"id": f"zone-{self._n}"}
        if path == "/api/v1/devices":
            signed = body.get("signed")
            return {
                "device_id": body["device_id"],
                "mqtt_username": body["device_id"],
                "mqtt_password": "pw",
                "signing_key": KEY if signed else None,
            }
        return {}


def _prepare(
    tmp_path: Path, names: list[str], seed: int = 1, anchor: int = ANCHOR
) -> tuple[Context, FakeApi, list[Scenario]]:
    api = FakeApi()
    expect = ExpectFile(seed=seed)
    ctx = Context(api, Broker("127.0.0.1", 1), tmp_path, seed, anchor, "S1", expect)
    scenarios = [SCENARIOS[n](ctx) for n in names]
    for s in scenarios:
        s.prepare()
        next(s.play())  # records made, devices started (no network until pumped)
    return ctx, api, scenarios


def _journals(root: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted(root.glob("devices/*/journal.jsonl"))}


def _records(ctx: Context) -> dict[str, list[dict[str, Any]]]:
    return {d: [dict(r.body) for r in b.unacked()] for d, b in ctx.bracelets.items()}


def test_every_scenario_is_listed_with_a_summary() -> None:
    assert len(SCENARIOS) == 13
    for name, cls in SCENARIOS.items():
        assert cls.name == name
        assert cls.summary
        assert cls.code.isalpha()


def test_the_same_seed_and_anchor_make_the_same_records(tmp_path: Path) -> None:
    names = list(SCENARIOS)
    ctx_a, _, _ = _prepare(tmp_path / "a", names)
    ctx_b, _, _ = _prepare(tmp_path / "b", names)
    journals = _journals(tmp_path / "a")
    assert len(journals) == 15
    assert journals == _journals(tmp_path / "b")
    assert ctx_a.expect.to_json()["expectations"] == ctx_b.expect.to_json()["expectations"]
    phone_a, phone_b = (next(iter(c.phones.values())) for c in (ctx_a, ctx_b))
    assert list(phone_a._queue.values()) == list(phone_b._queue.values())
    _prepare(tmp_path / "c", names, seed=2)
    assert _journals(tmp_path / "c") != journals


def test_a_scenario_alone_makes_what_it_makes_among_all(tmp_path: Path) -> None:
    _prepare(tmp_path / "all", list(SCENARIOS))
    _prepare(tmp_path / "one", ["curfew"])
    assert _journals(tmp_path / "one")["S1-CF1"] == _journals(tmp_path / "all")["S1-CF1"]


def test_records_are_in_the_past_after_each_devices_assignment(tmp_path: Path) -> None:
    ctx, api, _ = _prepare(tmp_path, list(SCENARIOS))
    assigned = {
        body["device_id"]: ms_of(body["assigned_at"])
        for method, path, body in api.calls
        if path == "/api/v1/devices"
    }
    subject_of = {
        b["device_id"]: b["subject_id"] for _, p, b in api.calls if p == "/api/v1/devices"
    }
    rules_from: dict[str, int] = {}
    for _, path, body in api.calls:
        if path.endswith(("/status", "/zones")):
            subject = path.split("/")[4]
            at = body.get("effective_at") or body["properties"]["valid_from"]
            rules_from[subject] = min(rules_from.get(subject, ms_of(at)), ms_of(at))
    for device_id, records in _records(ctx).items():
        times = [r["t"] for r in records]
        assert min(times) >= assigned[device_id], device_id
        # Judged by the rules of their time: the rules were in force already.
        assert min(times) >= rules_from[subject_of[device_id]], device_id
        # Only the clock running ahead stamps anything after the anchor.
        limit = ANCHOR + (7 * 60_000 if device_id.endswith("CS1") else 0)
        assert max(times) <= limit, device_id
        seqs = [r["seq"] for r in records]
        assert seqs == list(range(1, len(seqs) + 1))
        assert times == sorted(times), f"{device_id}: a device makes records in time order"


def test_each_scenario_expects_something_definite(tmp_path: Path) -> None:
    ctx, _, scenarios = _prepare(tmp_path, list(SCENARIOS))
    by_scenario: dict[str, list[Any]] = {}
    for e in ctx.expect.expectations:
        by_scenario.setdefault(e.scenario, []).append(e)
    for s in scenarios:
        definite = [e for e in by_scenario[s.name] if getattr(e, "must", "exist") != "may"]
        assert definite, s.name


def test_alert_windows_fall_among_the_devices_own_records(tmp_path: Path) -> None:
    ctx, _, _ = _prepare(tmp_path, list(SCENARIOS))
    records = _records(ctx)
    for e in ctx.expect.expectations:
        if not isinstance(e, AlertExpectation) or e.fix_time is None or e.device_id is None:
            continue
        if e.device_id not in records:
            continue  # the phone: its locations are checked below
        assert e.fix_time.start is not None
        assert e.fix_time.end is not None
        times = {r["t"] for r in records[e.device_id]}
        inside = [t for t in times if ms_of(e.fix_time.start) <= t < ms_of(e.fix_time.end)]
        if e.must == "exist":
            assert inside, f"{e.scenario}: no record of {e.device_id} in {e.fix_time.text()}"


def test_the_offline_burst_is_one_upload_hours_late(tmp_path: Path) -> None:
    ctx, _, _ = _prepare(tmp_path, ["offline-burst"])
    [bracelet] = ctx.bracelets.values()
    records = bracelet.unacked()
    assert bracelet.batch_size == 500
    assert 150 < len(records) <= 500
    assert max(r.body["t"] for r in records) <= ANCHOR - 2 * 3_600_000  # type: ignore[operator]
    [exit_] = [e for e in ctx.expect.expectations if isinstance(e, AlertExpectation)]
    assert exit_.delay_s is not None
    assert exit_.delay_s.min == 3600.0


def test_the_curfew_walks_are_at_night_and_in_the_afternoon(tmp_path: Path) -> None:
    ctx, api, _ = _prepare(tmp_path, ["curfew"])
    [zone] = [body for _, path, body in api.calls if path.endswith("/zones")]
    assert zone["properties"]["schedule"]["weekly"][0]["from"] == "21:00"
    [records] = _records(ctx).values()
    tz = ZoneInfo("Asia/Almaty")
    hours = {datetime.fromtimestamp(int(r["t"]) / 1000, tz).hour for r in records}
    assert hours <= {22, 23, 13, 14}
    alerts = [e for e in ctx.expect.expectations if isinstance(e, AlertExpectation)]
    [night] = [e for e in alerts if e.must == "exist"]
    [day] = [e for e in alerts if e.must == "absent"]
    assert night.kind == day.kind == "curfew"
    assert night.fix_time is not None
    assert day.fix_time is not None
    assert night.fix_time.start is not None
    assert day.fix_time.start is not None
    local = datetime.fromtimestamp(ms_of(night.fix_time.start) / 1000, tz)
    assert local.hour == 23
    assert datetime.fromtimestamp(ms_of(day.fix_time.start) / 1000, tz).hour == 13


def test_the_exclusion_zone_is_a_closed_polygon_named_in_the_expectation(tmp_path: Path) -> None:
    ctx, api, _ = _prepare(tmp_path, ["exclusion-zone"])
    [zone] = [body for _, path, body in api.calls if path.endswith("/zones")]
    ring = zone["geometry"]["coordinates"][0]
    assert zone["properties"]["kind"] == "exclusion"
    assert ring[0] == ring[-1]
    assert len(ring) == 5
    [e] = ctx.expect.expectations
    assert isinstance(e, AlertExpectation)
    assert e.zone_id is not None
    assert e.zone_id.startswith("zone-")


def test_the_phone_speaks_owntracks(tmp_path: Path) -> None:
    ctx, api, _ = _prepare(tmp_path, ["owntracks"])
    [enrol] = [body for _, path, body in api.calls if path == "/api/v1/devices"]
    assert enrol["kind"] == "owntracks"
    assert enrol["owntracks_topic"] == "owntracks/s1-ot1/phone"
    [phone] = ctx.phones.values()
    messages = [json.loads(payload) for _, payload, _ in phone._queue.values()]
    assert all(m["_type"] == "location" for m in messages)
    assert all(isinstance(m["tst"], int) and isinstance(m["acc"], int) for m in messages)
    distinct = {m["tst"] for m in messages}
    assert len(messages) == len(distinct) + 5  # five sent twice
    buffered = [m for m in messages if m["created_at"] > m["tst"]]
    assert len(buffered) == 1


@pytest.mark.parametrize("name", ["duplicates", "leave-radius", "spoofed-jumps"])
def test_scenarios_enrol_signed_bracelets(tmp_path: Path, name: str) -> None:
    _, api, _ = _prepare(tmp_path, [name])
    enrolments = [body for _, path, body in api.calls if path == "/api/v1/devices"]
    assert enrolments
    assert all(b["signed"] is True and b["kind"] == "bracelet" for b in enrolments)
