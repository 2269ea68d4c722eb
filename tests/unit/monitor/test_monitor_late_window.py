"""monitor.rules.engine.rejudge_window: late fixes judged with their stored neighbours,
so a backlog arriving in small uploads still confirms, once, as one alert."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from geofences.geodesy import offset
from geofences.model import Circle
from monitor.domain import Fix
from monitor.rules.book import RuleBook, ZoneEntry
from monitor.rules.engine import (
    AlertChange,
    Change,
    Debounce,
    SubjectState,
    evaluate,
    rejudge_window,
)

PROPERTY = settings(database=None, deadline=None, max_examples=60)
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
HOME = (71.4304, 51.1282)
BOOK = RuleBook(
    "subject-1",
    "Asia/Almaty",
    zones=(ZoneEntry("home", "home", Circle(HOME[0], HOME[1], 100.0), T0 - timedelta(days=1)),),
)
DEBOUNCE = Debounce(confirm_fixes=3, confirm_s=600)
OUT, IN = 1000.0, 0.0


def fix(metres: float, i: int) -> Fix:
    lon, lat = offset(HOME[0], HOME[1], metres, 0.0)
    t = T0 + timedelta(seconds=30 * i)
    return Fix("BR-1", i, t, float(lat), float(lon), 5.0, "gnss", t + timedelta(hours=1))


def summary(changes: Sequence[AlertChange]) -> list[tuple[Change, int | None, int, bool]]:
    return [(c.change, c.episode.first.seq, c.episode.count, c.late) for c in changes]


def test_a_backlog_in_uploads_of_two_confirms_on_the_second() -> None:
    # Live: home at 0 and 20; the device was offline with fixes 1..6 out of home.
    stored = [fix(IN, 0), fix(IN, 20)]
    state, _ = evaluate(BOOK, SubjectState(), stored, DEBOUNCE)
    backlog = [fix(OUT, i) for i in range(1, 7)]

    # What evaluate alone does: each upload judged alone, never 3 in a row.
    _, alone = evaluate(BOOK, state, backlog[:2], DEBOUNCE)
    assert alone == []

    state1, first = rejudge_window(BOOK, stored, backlog[:2], DEBOUNCE, state)
    assert first == []
    assert state1 is not None
    stored += backlog[:2]
    state2, second = rejudge_window(BOOK, stored, backlog[2:4], DEBOUNCE, state1)
    # Confirmed at the third fix; the window also shows the subject home again at 20.
    assert summary(second) == [
        (Change.OPEN, 1, 3, True),
        (Change.UPDATE, 1, 4, True),
        (Change.CLEAR, 1, 4, True),
    ]
    assert second[-1].fix.seq == 20
    stored += backlog[2:4]
    _, third = rejudge_window(BOOK, stored, backlog[4:], DEBOUNCE, state2)
    assert summary(third) == [(Change.UPDATE, 1, 6, True)]  # cleared already: not again
    assert {c.episode.key for c in second + third} == {second[0].episode.key}


def test_the_window_shows_the_end_of_the_episode() -> None:
    stored = [fix(IN, 0), fix(IN, 10)]
    _, changes = rejudge_window(BOOK, stored, [fix(OUT, i) for i in range(1, 5)], DEBOUNCE)
    assert summary(changes) == [
        (Change.OPEN, 1, 3, True),
        (Change.UPDATE, 1, 4, True),
        (Change.CLEAR, 1, 4, True),
    ]
    assert changes[-1].fix.seq == 10
    assert changes[-1].reason == "complied again"


def test_late_fixes_already_in_stored_are_taken_once() -> None:
    late = [fix(OUT, i) for i in range(1, 4)]
    stored = [fix(IN, 0), *late, fix(IN, 10)]
    _, changes = rejudge_window(BOOK, stored, late, DEBOUNCE)
    assert [c.change for c in changes] == [Change.OPEN, Change.CLEAR]
    assert rejudge_window(BOOK, stored, [], DEBOUNCE) == (None, [])


def test_late_fixes_before_an_alerted_episode_supersede_its_key() -> None:
    stored = [fix(IN, 0), *(fix(OUT, i) for i in range(5, 9)), fix(IN, 20)]
    _, before = evaluate(BOOK, SubjectState(), stored, DEBOUNCE)
    old_key = before[0].episode.key
    _, changes = rejudge_window(BOOK, stored, [fix(OUT, 3), fix(OUT, 4)], DEBOUNCE)
    assert [(c.change, c.episode.supersedes) for c in changes] == [(Change.UPDATE, old_key)]
    assert changes[0].episode.first.seq == 3
    assert changes[0].episode.count == 6


def test_a_late_compliant_fix_that_splits_an_episode() -> None:
    stored = [fix(IN, 0), *(fix(OUT, i) for i in (1, 2, 4, 5)), fix(IN, 20)]
    _, before = evaluate(BOOK, SubjectState(), stored, DEBOUNCE)
    assert [c.change for c in before] == [Change.OPEN, Change.UPDATE, Change.CLEAR]
    _, changes = rejudge_window(BOOK, stored, [fix(IN, 3)], DEBOUNCE)
    assert [(c.change, c.reason) for c in changes] == [(Change.CLEAR, "late fixes show compliance")]
    assert changes[0].episode.key == before[0].episode.key
    assert changes[0].fix.seq == 3


def test_a_window_that_begins_inside_an_episode() -> None:
    """The subject has been out since long before the window: match by rule, not key."""
    state, _ = evaluate(BOOK, SubjectState(), [fix(OUT, i) for i in range(0, 14)], DEBOUNCE)
    live = state.episodes["zone:home"]
    stored = [fix(OUT, i) for i in range(10, 14)]
    lon, lat = offset(HOME[0], HOME[1], OUT, 0.0)
    t = fix(OUT, 12).t + timedelta(seconds=5)
    late = Fix("BR-1", 99, t, float(lat), float(lon), 5.0, "gnss", t)
    new_state, changes = rejudge_window(BOOK, stored, [late], DEBOUNCE, state)
    assert [(c.change, c.episode.partial) for c in changes] == [(Change.UPDATE, True)]
    assert new_state is not None
    grown = new_state.episodes["zone:home"]
    assert (grown.first, grown.count, grown.confirmed) == (live.first, live.count + 1, True)
    # With the whole history, the same episode is named by its real first fix.
    everything = [fix(OUT, i) for i in range(0, 14)]
    _, whole = rejudge_window(BOOK, everything, [late], DEBOUNCE, state, from_start=True)
    assert [(c.change, c.episode.partial, c.episode.key) for c in whole] == [
        (Change.UPDATE, False, live.key)
    ]


def test_no_state_when_the_window_stops_short_of_the_live_end() -> None:
    state, _ = evaluate(BOOK, SubjectState(), [fix(IN, i) for i in range(0, 30)], DEBOUNCE)
    result, _ = rejudge_window(
        BOOK, [fix(IN, i) for i in range(0, 5)], [fix(OUT, 2)], DEBOUNCE, state
    )
    assert result is None


# --- the service's view: one alert per episode, whatever the order of arrival -------------


@dataclass
class Alerts:
    """What the service does with changes: one alert per episode key, OPEN of a known key
    is an UPDATE, an UPDATE that supersedes renames the alert."""

    by_key: dict[str, dict[str, object]] = field(default_factory=dict)

    def apply(self, changes: Sequence[AlertChange]) -> None:
        for c in changes:
            key = c.episode.key
            if c.change is Change.OPEN:
                self.by_key.setdefault(key, {"cleared": None})
            elif c.change is Change.UPDATE:
                gone = c.episode.supersedes
                if gone is not None and gone in self.by_key:
                    self.by_key[key] = self.by_key.pop(gone)
                assert key in self.by_key, f"no alert for {key}"
            else:
                assert key in self.by_key, f"no alert to clear for {key}"
                self.by_key[key]["cleared"] = c.reason


@PROPERTY
@given(
    st.lists(st.booleans(), min_size=1, max_size=24),
    st.integers(0, 2**31),
    st.integers(1, 4),
)
def test_any_order_of_arrival_gives_one_alert_per_episode(
    outside: list[bool], seed: int, upload: int
) -> None:
    fixes = [fix(OUT if o else IN, i) for i, o in enumerate(outside)]
    _, ideal = evaluate(BOOK, SubjectState(), fixes, DEBOUNCE)
    ideal_keys = {c.episode.key for c in ideal}

    rng = random.Random(seed)
    arrival = fixes[:]
    rng.shuffle(arrival)
    alerts, state, stored = Alerts(), SubjectState(), []
    for start in range(0, len(arrival), upload):
        batch = arrival[start : start + upload]
        late = [f for f in batch if state.last_t is not None and f.t < state.last_t]
        live = [f for f in batch if f not in late]
        if late:
            new_state, changes = rejudge_window(
                BOOK, stored, late, DEBOUNCE, state, from_start=True
            )
            alerts.apply(changes)
            if new_state is not None:
                state = new_state
        state, changes = evaluate(BOOK, state, live, DEBOUNCE)
        alerts.apply(changes)
        stored += batch

    # Every episode of the whole history has exactly one alert ...
    assert ideal_keys <= set(alerts.by_key)
    # ... and any other alert was cleared once late fixes showed compliance.
    for key, alert in alerts.by_key.items():
        if key not in ideal_keys:
            assert alert["cleared"] == "late fixes show compliance", key
