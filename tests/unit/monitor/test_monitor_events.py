"""monitor.rules.events: what device events mean for alerts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from monitor.domain import EVENT_KINDS, AlertKind, DeviceEvent
from monitor.rules.events import EventOutcome, judge

T = datetime(2026, 11, 22, 13, 5, tzinfo=UTC)


def device_event(kind: str) -> DeviceEvent:
    return DeviceEvent("BR-0001", 7, T, kind, T)


@pytest.mark.parametrize(
    ("kind", "alert", "clears"),
    [
        ("strap_open", AlertKind.TAMPER, False),
        ("case_open", AlertKind.TAMPER, False),
        ("strap_closed", AlertKind.TAMPER, True),
        ("battery_critical", AlertKind.BATTERY, False),
        ("charger_on", AlertKind.BATTERY, True),
        ("jamming", AlertKind.JAMMING, False),
        ("sos", AlertKind.SOS, False),
    ],
)
def test_events_that_open_or_clear_an_alert(kind: str, alert: AlertKind, clears: bool) -> None:
    outcome = judge(device_event(kind))
    assert isinstance(outcome, EventOutcome)
    assert (outcome.kind, outcome.clears) == (alert, clears)
    assert outcome.reason


@pytest.mark.parametrize(
    "kind", ["boot", "battery_low", "charger_off", "no_fix", "cmd_result", "online", "offline"]
)
def test_events_that_mean_nothing_for_alerts(kind: str) -> None:
    assert judge(device_event(kind)) is None


def test_strap_open_and_strap_closed_concern_the_same_alert() -> None:
    opened, closed = judge(device_event("strap_open")), judge(device_event("strap_closed"))
    assert opened is not None
    assert closed is not None
    assert opened.kind is closed.kind is AlertKind.TAMPER
    assert (opened.clears, closed.clears) == (False, True)


def test_every_v1_event_kind_is_judged_without_error() -> None:
    outcomes = {kind: judge(device_event(kind)) for kind in EVENT_KINDS}
    assert {k for k, o in outcomes.items() if o is not None} == {
        "strap_open",
        "strap_closed",
        "case_open",
        "battery_critical",
        "charger_on",
        "jamming",
        "sos",
    }
