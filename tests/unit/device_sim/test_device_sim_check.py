"""`device-sim check` on data it is handed: journals against stored seqs, expectations
against alerts, the expect file's format, and the report, without a server."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device_sim.api import ApiError, OperatorClient
from device_sim.check import judge_alert, judge_device, judge_fixes, judge_journal, run_check
from device_sim.expect import (
    AlertExpectation,
    Bounds,
    DeviceEntry,
    DeviceExpectation,
    ExpectFile,
    FixesExpectation,
    Unsupported,
    Window,
    iso_ms,
)
from device_sim.journal import History, Journal, Span

T0 = 1_763_816_700_000


def _history(*spans: Span, acked: int, last: int | None = None) -> History:
    return History(acked, last if last is not None else max(s.last for s in spans), spans)


# -- journals ------------------------------------------------------------------------


def test_every_acknowledged_fix_stored_once_is_ok() -> None:
    history = _history(Span("fix", 1, 5, T0, T0 + 4), Span("event", 6, 6, T0 + 5, T0 + 5), acked=6)
    [finding] = judge_journal("BR-1", history, [1, 2, 3, 4, 5])
    assert finding.verdict == "ok"
    assert "5 acknowledged fix(es) up to seq 6, each stored once" in finding.text
    assert "1 acknowledged event(s) not compared" in finding.text


def test_a_missing_a_doubled_and_a_foreign_fix_are_differences() -> None:
    history = _history(Span("fix", 1, 5), Span("event", 6, 6), acked=6)
    findings = judge_journal("BR-1", history, [1, 2, 2, 4, 5, 6, None])
    texts = [f.text for f in findings if f.failed]
    assert texts == [
        "1 acknowledged fix(es) not stored: seq 3",
        "1 fix(es) stored more than once: seq 2",
        "1 stored fix(es) the device never made as a fix: seq 6",
    ]


def test_fixes_not_yet_acknowledged_may_or_may_not_be_stored() -> None:
    history = _history(Span("fix", 1, 10), acked=6)
    findings = judge_journal("BR-1", history, [1, 2, 3, 4, 5, 6, 7])
    assert not any(f.failed for f in findings)
    assert "1 stored before their ack reached the device" in findings[0].text
    assert findings[1].text.startswith("4 record(s) after seq 6 not acknowledged yet")


def test_a_seq_beyond_anything_the_device_made_is_foreign() -> None:
    history = _history(Span("fix", 1, 3), acked=3)
    findings = judge_journal("BR-1", history, [1, 2, 3, 1_000_000])
    assert [f.text for f in findings if f.failed] == [
        "1 stored fix(es) the device never made as a fix: seq 1000000"
    ]


def test_fixes_from_before_the_assignment_are_not_expected() -> None:
    history = _history(
        Span("fix", 1, 3, T0, T0 + 2000),
        Span("event", 4, 4, T0 + 2500, T0 + 2500),
        Span("fix", 5, 7, T0 + 3000, T0 + 5000),
        Span("event", 8, 8, T0 + 5500, T0 + 5500),
        Span("fix", 9, 10, T0 + 6000, T0 + 7000),
        acked=10,
    )
    findings = judge_journal("BR-1", history, [9, 10], assigned_at_ms=T0 + 4000)
    assert not any(f.failed for f in findings)
    infos = [f.text for f in findings if f.verdict == "info"]
    assert any(t.startswith("3 fix(es) stamped before the device was assigned") for t in infos)
    assert any(t.startswith("3 fix(es) in runs that straddle") for t in infos)


def test_a_real_journal_after_a_lost_row() -> None:
    journal = Journal()
    for i in range(10):
        journal.add_fix(T0 + i, 43.2, 76.9, 8.0)
    journal.acknowledge(10)
    history = History(10, 10, (Span("fix", 1, 10, T0, T0 + 9),))
    stored = [s for s in range(1, 11) if s not in (4, 5, 9)]
    [finding, *_] = judge_journal("BR-1", history, stored)
    assert finding.text == "3 acknowledged fix(es) not stored: seq 4-5, 9"


# -- alerts ----------------------------------------------------------------------------


def _alert(**fields: Any) -> dict[str, Any]:
    alert = {
        "id": "a-1",
        "subject_id": "s-1",
        "device_id": "BR-1",
        "kind": "zone_exit",
        "state": "open",
        "fix_time": iso_ms(T0),
        "received_at": iso_ms(T0 + 3_600_000),
        "zone_id": None,
        "detail": {},
    }
    alert.update(fields)
    return alert


def _expect(**fields: Any) -> AlertExpectation:
    base: dict[str, Any] = {"scenario": "sc", "kind": "zone_exit", "subject_id": "s-1"}
    base.update(fields)
    return AlertExpectation(**base)


def test_an_alert_in_its_window_exists() -> None:
    e = _expect(device_id="BR-1", fix_time=Window(iso_ms(T0 - 1000), iso_ms(T0 + 1)))
    assert judge_alert(e, [_alert()]).verdict == "ok"
    late = _expect(fix_time=Window(iso_ms(T0 + 1), None))
    finding = judge_alert(late, [_alert()])
    assert finding.failed
    assert "found 0 matching" in finding.text
    assert "zone_exit BR-1 fix_time" in finding.text  # the near miss is shown


@pytest.mark.parametrize(
    ("fields", "matches"),
    [
        ({"cleared": True}, False),
        ({"cleared": False}, True),
        ({"delay_s": Bounds(3600, None)}, True),
        ({"delay_s": Bounds(3601, None)}, False),
        ({"state": "open"}, True),
        ({"zone_id": "z-1"}, False),
        ({"device_id": "BR-2"}, False),
        ({"detail": {"late": True}}, False),
        ({"kind": "curfew"}, False),
    ],
)
def test_each_matcher_narrows(fields: dict[str, Any], matches: bool) -> None:
    assert (judge_alert(_expect(**fields), [_alert()]).verdict == "ok") is matches


def test_cleared_reads_the_detail() -> None:
    cleared = _alert(detail={"cleared_at": iso_ms(T0 + 60_000), "late": True})
    assert judge_alert(_expect(cleared=True, detail={"late": True}), [cleared]).verdict == "ok"


def test_counts_absence_and_may() -> None:
    two = [_alert(), _alert(id="a-2")]
    assert judge_alert(_expect(count=Bounds(1, 1)), two).failed
    assert judge_alert(_expect(count=Bounds(2, 2)), two).verdict == "ok"
    assert judge_alert(_expect(must="absent"), two).failed
    assert judge_alert(_expect(must="absent", kind="curfew"), two).verdict == "ok"
    may = judge_alert(_expect(must="may", kind="spoofing"), two)
    assert may.verdict == "info"
    assert may.text.endswith("none")


def test_fixes_and_devices() -> None:
    fixes = [{"properties": {"t": iso_ms(T0 + i // 2 * 1000)}} for i in range(4)]
    e = FixesExpectation("ot", "s-1", "PH-1", Bounds(4, 4), distinct_t=True)
    finding = judge_fixes(e, fixes)
    assert finding.failed
    assert "fix times stored more than once" in finding.text
    assert judge_fixes(FixesExpectation("ot", "s-1", "PH-1", Bounds(4, 4)), fixes).verdict == "ok"
    offline = DeviceExpectation("si", "BR-1", online=False)
    assert judge_device(offline, {"online": False}).verdict == "ok"
    assert judge_device(offline, {"online": True}).failed
    assert judge_device(offline, None).failed


# -- the expect file -----------------------------------------------------------------


def test_the_expect_file_round_trips(tmp_path: Path) -> None:
    expect = ExpectFile(seed=3, anchor=iso_ms(T0), prefix="S3", state_dir=str(tmp_path))
    expect.devices.append(DeviceEntry("S3-LR1", "s-1", "bracelet", "leave-radius", True))
    expect.expectations += [
        _expect(
            device_id="S3-LR1",
            fix_time=Window(iso_ms(T0), iso_ms(T0 + 1)),
            count=Bounds(1, None),
            cleared=True,
            delay_s=Bounds(None, 5.0),
            why="because",
        ),
        FixesExpectation("ot", "s-2", "PH-1", Bounds(22, 22), distinct_t=True),
        DeviceExpectation("si", "S3-SI1", online=False),
    ]
    path = tmp_path / "expected.json"
    expect.save(path)
    raw = json.loads(path.read_text())
    assert raw["version"] == 1
    assert raw["expectations"][0]["fix_time"] == {"from": iso_ms(T0), "until": iso_ms(T0 + 1)}
    assert raw["expectations"][0]["count"] == {"min": 1, "max": None}
    again = ExpectFile.load(path)
    assert again.expectations == expect.expectations
    assert again.devices == expect.devices
    assert again.seed == 3


def test_what_this_version_cannot_check_is_kept_as_unsupported(tmp_path: Path) -> None:
    raw = {
        "version": 1,
        "expectations": [
            {"type": "alert", "scenario": "x", "kind": "proximity", "subject_id": "s",
             "distance_m": {"max": 100}},
            {"type": "audio", "scenario": "y"},
            {"type": "alert", "scenario": "z", "kind": "sos", "subject_id": "s", "must": "maybe"},
        ],
    }  # fmt: skip
    expect = ExpectFile.from_json(raw)
    assert all(isinstance(e, Unsupported) for e in expect.expectations)
    with pytest.raises(ValueError, match="version"):
        ExpectFile.from_json({"version": 2})


# -- the whole check, the API faked ------------------------------------------------------


class FakeApi(OperatorClient):
    def __init__(self, fixes: dict[str, list[dict[str, Any]]], alerts: list[dict[str, Any]]):
        super().__init__("http://127.0.0.1:1")
        self._fixes = fixes
        self._alerts = alerts
        self.devices_known: dict[str, dict[str, Any]] = {}
        self.refusing: dict[str, int] = {}  # subject id -> the status the API answers

    def _refuse(self, subject_id: str | None) -> None:
        if subject_id in self.refusing:
            path = f"/api/v1/subjects/{subject_id}"
            raise ApiError("GET", path, self.refusing[subject_id], "no such subject")

    def device(self, device_id: str) -> dict[str, Any]:
        return self.devices_known[device_id]

    def all_fixes(
        self, subject_id: str, reason: str, page: int = 10_000
    ) -> Iterator[dict[str, Any]]:
        self._refuse(subject_id)
        yield from self._fixes.get(subject_id, [])

    def all_alerts(
        self, reason: str, subject_id: str | None = None, page: int = 1000
    ) -> Iterator[dict[str, Any]]:
        self._refuse(subject_id)
        yield from (a for a in self._alerts if a["subject_id"] == subject_id)


def _fix(device_id: str, seq: int) -> dict[str, Any]:
    return {"properties": {"device_id": device_id, "seq": seq, "t": iso_ms(T0 + seq * 1000)}}


def _setup(tmp_path: Path, stored: list[int]) -> tuple[FakeApi, ExpectFile]:
    journal = Journal(tmp_path / "devices" / "BR-1")
    for i in range(1, 6):
        journal.add_fix(T0 + i * 1000, 43.2, 76.9, 8.0)
    journal.add_event(T0 + 6000, "strap_open")
    journal.acknowledge(6)
    journal.close()
    api = FakeApi({"s-1": [_fix("BR-1", s) for s in stored]}, [_alert(kind="tamper")])
    api.devices_known["BR-1"] = {"subject_id": "s-1", "assigned_at": iso_ms(T0), "online": True}
    expect = ExpectFile(state_dir=str(tmp_path))
    expect.devices.append(DeviceEntry("BR-1", "s-1", "bracelet", "tamper", True))
    expect.expectations.append(_expect(scenario="tamper", kind="tamper", device_id="BR-1"))
    expect.expectations.append(_expect(scenario="tamper", kind="zone_exit", must="absent"))
    return api, expect


def test_the_check_passes_when_everything_matches(tmp_path: Path) -> None:
    api, expect = _setup(tmp_path, [1, 2, 3, 4, 5])
    out = io.StringIO()
    assert run_check(api, expect, tmp_path, out) == 0
    text = out.getvalue()
    assert "check: 3 matched, 0 difference(s)" in text
    assert "ok    BR-1    5 acknowledged fix(es) up to seq 6, each stored once" in text


def test_the_check_fails_on_a_lost_fix_and_names_it(tmp_path: Path) -> None:
    api, expect = _setup(tmp_path, [1, 2, 4, 5])
    out = io.StringIO()
    assert run_check(api, expect, tmp_path, out) == 1
    assert "BR-1: 1 acknowledged fix(es) not stored: seq 3" in out.getvalue()


def test_the_check_fails_on_a_missing_alert(tmp_path: Path) -> None:
    api, expect = _setup(tmp_path, [1, 2, 3, 4, 5])
    api._alerts.clear()
    out = io.StringIO()
    assert run_check(api, expect, tmp_path, out) == 1
    assert "tamper: should exist (at least 1): tamper, BR-1" in out.getvalue()


def test_strict_counts_alerts_nobody_expected(tmp_path: Path) -> None:
    api, expect = _setup(tmp_path, [1, 2, 3, 4, 5])
    api._alerts.append(_alert(id="a-9", kind="sos"))
    assert run_check(api, expect, tmp_path, io.StringIO()) == 0
    out = io.StringIO()
    assert run_check(api, expect, tmp_path, out, strict=True) == 1
    assert "alerts no expectation names: sos ×1" in out.getvalue()


def test_an_unsupported_expectation_is_a_difference(tmp_path: Path) -> None:
    api, expect = _setup(tmp_path, [1, 2, 3, 4, 5])
    expect.expectations.append(Unsupported("future", {"type": "audio"}, "unknown type"))
    assert run_check(api, expect, tmp_path, io.StringIO()) == 1


def test_a_device_whose_journal_is_missing_is_a_difference(tmp_path: Path) -> None:
    api, expect = _setup(tmp_path, [1, 2, 3, 4, 5])
    out = io.StringIO()
    assert run_check(api, expect, tmp_path / "elsewhere", out) == 1
    assert "BR-1: no journal under" in out.getvalue()


def test_an_expectation_naming_an_unknown_subject_is_a_difference(tmp_path: Path) -> None:
    # A subject the API does not know is something the check reports (exit 1), not a
    # failure of the API (exit 2); a server error still is one.
    api, expect = _setup(tmp_path, [1, 2, 3, 4, 5])
    expect.expectations.append(_expect(scenario="gone", subject_id="s-gone", kind="tamper"))
    api.refusing["s-gone"] = 404
    out = io.StringIO()
    assert run_check(api, expect, tmp_path, out) == 1
    assert "s-gone  the API knows no such subject (404)" in out.getvalue()
    api.refusing["s-gone"] = 500
    with pytest.raises(ApiError):
        run_check(api, expect, tmp_path, io.StringIO())
