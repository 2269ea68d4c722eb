"""monitor.rules.liveness: communication loss, location loss and battery, each opened
and cleared; silence never reads as compliance."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.domain import AlertKind, Severity
from monitor.rules.engine import Change
from monitor.rules.liveness import (
    DeviceStatus,
    LivenessState,
    Policy,
    judge,
    judge_all,
    quiet_until,
)

PROPERTY = settings(database=None, deadline=None, max_examples=80)
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
POLICY = Policy(
    comms_buffer_s=120, location_loss_s=900, battery_critical_pct=10, battery_clear_pct=20
)


def device(**kw: object) -> DeviceStatus:
    base = DeviceStatus(
        device_id="BR-1",
        monitored_since=T0,
        upload_interval_s=60,
        fix_interval_s=30,
        last_upload_at=T0,
        last_fix_t=T0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def kinds(changes: list) -> list[tuple[AlertKind, Change]]:  # type: ignore[type-arg]
    return [(c.kind, c.change) for c in changes]


def test_all_well() -> None:
    state, changes = judge(device(), LivenessState(), at(60), POLICY)
    assert changes == []
    assert state == LivenessState()


def test_communication_loss_opens_after_the_interval_plus_the_buffer_and_clears() -> None:
    state, changes = judge(device(), LivenessState(), at(180), POLICY)
    assert changes == []  # exactly interval + buffer: not yet
    state, changes = judge(device(), state, at(181), POLICY)
    assert kinds(changes) == [(AlertKind.COMMS_LOSS, Change.OPEN)]
    assert changes[0].since == T0
    assert changes[0].severity is Severity.SERIOUS
    state, changes = judge(device(), state, at(400), POLICY)
    assert changes == []  # still open, nothing new
    back = device(last_upload_at=at(390), last_fix_t=at(390))
    state, changes = judge(back, state, at(400), POLICY)
    assert kinds(changes) == [(AlertKind.COMMS_LOSS, Change.CLEAR)]
    assert state.open == frozenset()


def test_a_device_that_never_reported_is_lost_from_when_it_was_fitted() -> None:
    silent = device(last_upload_at=None, last_fix_t=None)
    _, changes = judge(silent, LivenessState(), at(181), POLICY)
    assert kinds(changes) == [(AlertKind.COMMS_LOSS, Change.OPEN)]


def test_location_loss_while_uploads_continue() -> None:
    no_fix = device(last_upload_at=at(1000), last_fix_t=T0)
    state, changes = judge(no_fix, LivenessState(), at(900), POLICY)
    assert changes == []
    state, changes = judge(no_fix, state, at(901), POLICY)
    assert kinds(changes) == [(AlertKind.LOCATION_LOSS, Change.OPEN)]
    fixed = device(last_upload_at=at(1000), last_fix_t=at(995))
    state, changes = judge(fixed, state, at(1000), POLICY)
    assert kinds(changes) == [(AlertKind.LOCATION_LOSS, Change.CLEAR)]


def test_a_no_fix_event_opens_location_loss_until_a_newer_fix() -> None:
    reported = device(last_upload_at=at(50), last_fix_t=at(10), no_fix_at=at(40))
    state, changes = judge(reported, LivenessState(), at(60), POLICY)
    assert kinds(changes) == [(AlertKind.LOCATION_LOSS, Change.OPEN)]
    assert changes[0].since == at(40)
    fixed = replace(reported, last_fix_t=at(55))
    state, changes = judge(fixed, state, at(60), POLICY)
    assert kinds(changes) == [(AlertKind.LOCATION_LOSS, Change.CLEAR)]


def test_no_location_decision_while_communication_is_lost() -> None:
    lost = device(last_upload_at=T0, last_fix_t=T0)
    state, changes = judge(lost, LivenessState(), at(2000), POLICY)
    assert kinds(changes) == [(AlertKind.COMMS_LOSS, Change.OPEN)]  # no location_loss yet
    held = LivenessState(frozenset({AlertKind.LOCATION_LOSS}))
    state, changes = judge(lost, held, at(2000), POLICY)
    assert AlertKind.LOCATION_LOSS in state.open  # neither cleared nor re-opened
    assert kinds(changes) == [(AlertKind.COMMS_LOSS, Change.OPEN)]


def test_battery_with_hysteresis_and_charging() -> None:
    state, changes = judge(device(battery_pct=10), LivenessState(), at(30), POLICY)
    assert kinds(changes) == [(AlertKind.BATTERY, Change.OPEN)]
    state, changes = judge(device(battery_pct=15), state, at(60), POLICY)
    assert changes == []  # between the thresholds: stays open
    state, changes = judge(device(battery_pct=20), state, at(90), POLICY)
    assert kinds(changes) == [(AlertKind.BATTERY, Change.CLEAR)]
    state, changes = judge(device(battery_pct=5, charging=True), state, at(120), POLICY)
    assert changes == []
    state, changes = judge(device(battery_pct=5), state, at(150), POLICY)
    assert kinds(changes) == [(AlertKind.BATTERY, Change.OPEN)]
    state, changes = judge(device(battery_pct=None, charging=True), state, at(180), POLICY)
    assert kinds(changes) == [(AlertKind.BATTERY, Change.CLEAR)]


def test_judge_all() -> None:
    devices = [device(), device(device_id="BR-2", last_upload_at=None, last_fix_t=None)]
    states, changes = judge_all(devices, {}, at(300), POLICY)
    assert set(states) == {"BR-1", "BR-2"}
    assert [(c.device_id, c.kind) for c in changes] == [
        ("BR-1", AlertKind.COMMS_LOSS),
        ("BR-2", AlertKind.COMMS_LOSS),
    ]


@PROPERTY
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3000),  # seconds since the last upload
            st.integers(0, 3000),  # seconds since the last fix
            st.one_of(st.none(), st.integers(0, 100)),
            st.booleans(),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_every_open_has_a_matching_clear_and_the_state_follows(
    looks: list[tuple[int, int, int | None, bool]],
) -> None:
    """Opens and clears alternate per kind, starting with an open; the state is the set
    of kinds opened and not cleared."""
    state = LivenessState()
    open_now: set[AlertKind] = set()
    now = at(10_000)
    for upload_ago, fix_ago, battery, charging in looks:
        d = device(
            last_upload_at=now - timedelta(seconds=upload_ago),
            last_fix_t=now - timedelta(seconds=fix_ago),
            battery_pct=battery,
            charging=charging,
        )
        state, changes = judge(d, state, now, POLICY)
        for c in changes:
            if c.change is Change.OPEN:
                assert c.kind not in open_now
                open_now.add(c.kind)
            else:
                assert c.kind in open_now
                open_now.discard(c.kind)
        assert state.open == frozenset(open_now)
        comms_lost = upload_ago > 180
        assert (AlertKind.COMMS_LOSS in open_now) is comms_lost
        if not comms_lost:
            assert (AlertKind.LOCATION_LOSS in open_now) is (fix_ago > 900)
        now += timedelta(seconds=1)


_maybe_s = st.one_of(st.none(), st.floats(-4000, 4000))


@PROPERTY
@given(
    upload_s=_maybe_s,
    fix_s=_maybe_s,
    no_fix_s=_maybe_s,
    battery=st.one_of(st.none(), st.integers(0, 100)),
    charging=st.booleans(),
    upload_interval_s=st.floats(10, 3600),
    fix_interval_s=st.floats(1, 3600),
    later_s=st.floats(0, 8000),
)
def test_nothing_changes_while_a_device_is_quiet(
    upload_s: float | None,
    fix_s: float | None,
    no_fix_s: float | None,
    battery: int | None,
    charging: bool,
    upload_interval_s: float,
    fix_interval_s: float,
    later_s: float,
) -> None:
    """The service skips a device until `quiet_until` (nothing open, nothing heard):
    judging it at any moment up to then must find nothing, and the moment after may."""
    d = DeviceStatus(
        device_id="BR-1",
        monitored_since=T0,
        upload_interval_s=upload_interval_s,
        fix_interval_s=fix_interval_s,
        last_upload_at=None if upload_s is None else at(upload_s),
        last_fix_t=None if fix_s is None else at(fix_s),
        no_fix_at=None if no_fix_s is None else at(no_fix_s),
        battery_pct=battery,
        charging=charging,
    )
    until = quiet_until(d, POLICY)
    if until is None:
        return
    for now in (until - timedelta(seconds=later_s), until):
        state, changes = judge(d, LivenessState(), now, POLICY)
        assert changes == [], (now, changes)
        assert not state.open
    _, after = judge(d, LivenessState(), until + timedelta(microseconds=1), POLICY)
    assert after, "quiet_until is the last quiet moment, not an earlier one"


def test_a_device_with_a_no_fix_report_or_a_flat_battery_is_never_quiet() -> None:
    assert quiet_until(device(no_fix_at=at(10)), POLICY) is None
    assert quiet_until(device(battery_pct=5), POLICY) is None
    assert quiet_until(device(battery_pct=5, charging=True), POLICY) is not None
    assert quiet_until(device(), POLICY) == at(60 + 120)
