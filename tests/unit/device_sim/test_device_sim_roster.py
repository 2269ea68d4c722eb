"""The simulated caseload: planned from the seed, saved after every enrolment step."""

from __future__ import annotations

import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from device_sim.api import ConflictError, Enrolment, OperatorClient
from device_sim.roster import CITIES, Roster, enrol, plan_member
from device_sim.tracks import distance_m


def test_members_are_a_pure_function_of_the_seed() -> None:
    assert plan_member(3, seed=1, prefix="SIM") == plan_member(3, seed=1, prefix="SIM")
    assert plan_member(3, seed=1, prefix="SIM").home != plan_member(3, seed=2, prefix="SIM").home


def test_the_first_member_is_the_breaker_every_fifth_a_commuter_and_cities_alternate() -> None:
    members = [plan_member(i, seed=1, prefix="SIM") for i in range(6)]
    assert [m.scenario for m in members] == ["breaker"] + ["compliant"] * 3 + [
        "commuter",
        "compliant",
    ]
    assert [m.city for m in members] == ["Almaty", "Astana"] * 3
    assert [m.device_id for m in members[:2]] == ["SIM-0001", "SIM-0002"]
    for m in members:
        assert distance_m(CITIES[m.city], m.home) <= 4000.5


def test_the_roster_round_trips_and_keeps_secrets_to_its_owner(tmp_path: Path) -> None:
    roster = Roster(tmp_path)
    roster.ensure(3, seed=1, prefix="SIM")
    roster.update(replace(roster.members[0], mqtt_username="SIM-0001", mqtt_password="pw"))
    again = Roster.load(tmp_path)
    assert again.members == roster.members
    assert again.members[0].enrolled
    mode = stat.S_IMODE((tmp_path / "roster.json").stat().st_mode)
    assert mode == 0o600


def test_saved_members_are_kept_when_the_fleet_grows(tmp_path: Path) -> None:
    Roster(tmp_path).ensure(2, seed=1, prefix="SIM")
    grown = Roster.load(tmp_path).ensure(4, seed=99, prefix="SIM")
    assert grown[:2] == [plan_member(i, seed=1, prefix="SIM") for i in range(2)]
    assert grown[2:] == [plan_member(i, seed=99, prefix="SIM") for i in range(2, 4)]


class FakeApi(OperatorClient):
    """The operator API's answers, without HTTP."""

    def __init__(self, fail_status_once: bool = False, enrolled: set[str] | None = None) -> None:
        super().__init__("http://127.0.0.1:9")
        self.calls: list[tuple[str, Any]] = []
        self.fail_status_once = fail_status_once
        self.enrolled = enrolled or set()

    def create_subject(
        self, name: str, external_id: str, timezone: str, officer: str | None = None
    ) -> dict[str, Any]:
        self.calls.append(("subject", external_id))
        return {"id": f"subj-{external_id}"}

    def set_status(
        self,
        subject_id: str,
        status: str,
        home: tuple[float, float] | None = None,
        effective_at: str | None = None,
    ) -> dict[str, Any]:
        if self.fail_status_once:
            self.fail_status_once = False
            raise ConnectionError("the API went away")
        self.calls.append(("status", (subject_id, status, home)))
        return {}

    def enrol_device(
        self, device_id: str, subject_id: str, kind: str = "bracelet", signed: bool = True
    ) -> Enrolment:
        if device_id in self.enrolled:
            raise ConflictError("POST", "/api/v1/devices", 409, "enrolled")
        self.calls.append(("device", (device_id, subject_id, kind, signed)))
        return Enrolment(device_id, device_id, f"pw-{device_id}", "k" * 43)


def test_enrolment_creates_sets_yellow_and_enrols(tmp_path: Path) -> None:
    roster = Roster(tmp_path)
    members = roster.ensure(2, seed=1, prefix="SIM")
    api = FakeApi()
    done = enrol(api, roster, members)
    home = (members[0].home.lon, members[0].home.lat)
    assert api.calls[:3] == [
        ("subject", "SIM-CASE-SIM-0001"),
        ("status", ("subj-SIM-CASE-SIM-0001", "yellow", home)),
        ("device", ("SIM-0001", "subj-SIM-CASE-SIM-0001", "bracelet", True)),
    ]
    assert all(m.enrolled and m.status_set and m.signing_key for m in done)
    assert Roster.load(tmp_path).members == done

    # A second run reuses everything and calls nothing.
    rerun = FakeApi()
    assert enrol(rerun, Roster.load(tmp_path), Roster.load(tmp_path).members) == done
    assert rerun.calls == []


def test_an_interrupted_enrolment_resumes_without_a_second_subject(tmp_path: Path) -> None:
    roster = Roster(tmp_path)
    members = roster.ensure(1, seed=1, prefix="SIM")
    with pytest.raises(ConnectionError):
        enrol(FakeApi(fail_status_once=True), roster, members)
    saved = Roster.load(tmp_path)
    assert saved.members[0].subject_id == "subj-SIM-CASE-SIM-0001"
    api = FakeApi()
    enrol(api, saved, saved.members)
    assert [c[0] for c in api.calls] == ["status", "device"]


def test_a_device_enrolled_elsewhere_is_a_clear_error(tmp_path: Path) -> None:
    roster = Roster(tmp_path)
    members = roster.ensure(1, seed=1, prefix="SIM")
    with pytest.raises(ConflictError, match="another --prefix"):
        enrol(FakeApi(enrolled={"SIM-0001"}), roster, members)


def test_a_commuter_is_set_green(tmp_path: Path) -> None:
    roster = Roster(tmp_path)
    members = roster.ensure(5, seed=1, prefix="SIM")
    api = FakeApi()
    enrol(api, roster, members)
    statuses = [args for kind, args in api.calls if kind == "status"]
    assert statuses[4] == ("subj-SIM-CASE-SIM-0005", "green", None)
    assert [s[1] for s in statuses[:4]] == ["yellow"] * 4
