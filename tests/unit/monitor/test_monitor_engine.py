"""monitor.rules.engine: accuracy-aware decisions, debounce, episodes and late fixes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import LineString, Polygon

from geofences.geodesy import distance_m, offset
from geofences.model import Area, Circle, Corridor
from monitor.domain import AlertKind, Fix, Status
from monitor.rules.book import RuleBook, StatusOrder, ZoneEntry
from monitor.rules.engine import (
    AlertChange,
    Change,
    Debounce,
    SubjectState,
    evaluate,
    rejudge,
)
from monitor.rules.schedule import parse

PROPERTY = settings(database=None, deadline=None, max_examples=60)

SUBJECT = "subject-1"
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
ALMATY = (76.889709, 43.238949)  # (lon, lat) at 43° N
ASTANA = (71.4304, 51.1282)  # at 51° N
DEBOUNCE = Debounce(confirm_fixes=3, confirm_s=120)
FAR = 2000.0  # metres from home: well outside a 500 m yellow radius


def secs(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


def at(
    home: tuple[float, float],
    metres: float,
    t: datetime,
    seq: int,
    *,
    acc: float = 5.0,
    src: str = "gnss",
    bearing: float = 0.0,
) -> Fix:
    """A fix `metres` from `home` on the given bearing (degrees from north)."""
    east = metres * math.sin(math.radians(bearing))
    north = metres * math.cos(math.radians(bearing))
    lon, lat = offset(home[0], home[1], east, north)
    return Fix("BR-0001", seq, t, float(lat), float(lon), acc, src, t + timedelta(seconds=2))


def status_book(status: Status, home: tuple[float, float], *more: StatusOrder) -> RuleBook:
    first = StatusOrder(status, effective_at=T0 - timedelta(days=1), recorded_at=T0, home=home)
    return RuleBook(SUBJECT, "Asia/Almaty", statuses=(first, *more))


def kinds(changes: Sequence[AlertChange]) -> list[Change]:
    return [c.change for c in changes]


def one_by_one(
    book: RuleBook, fixes: Sequence[Fix], debounce: Debounce = DEBOUNCE
) -> tuple[SubjectState, list[AlertChange]]:
    state, out = SubjectState(), []
    for f in fixes:
        state, changes = evaluate(book, state, [f], debounce)
        out += changes
    return state, out


def confirmed(book: RuleBook, home: tuple[float, float]) -> SubjectState:
    """A state with a confirmed (open) episode: three violating fixes 10 s apart."""
    fixes = [at(home, FAR, secs(10 * i), i + 1) for i in range(3)]
    state, changes = evaluate(book, SubjectState(), fixes, DEBOUNCE)
    assert kinds(changes) == [Change.OPEN]
    return state


# --- accuracy-aware decisions at a yellow radius ----------------------------------------

HOMES = [pytest.param(ALMATY, id="43N"), pytest.param(ASTANA, id="51N")]
BEARINGS = [pytest.param(b, id=f"bearing-{b}") for b in (0.0, 90.0, 225.0)]


@pytest.mark.parametrize("home", HOMES)
@pytest.mark.parametrize("bearing", BEARINGS)
@pytest.mark.parametrize(
    ("metres", "acc", "after_open", "fresh"),
    [
        # compliant: ends the open episode; starts nothing
        pytest.param(490.0, 5.0, [Change.CLEAR], [], id="490m-acc5-compliant"),
        # violation: updates the open episode; opens at once with a one-fix debounce
        pytest.param(510.0, 5.0, [Change.UPDATE], [Change.OPEN], id="510m-acc5-violation"),
        # possible: the uncertainty circle straddles the boundary; neither
        pytest.param(510.0, 20.0, [], [], id="510m-acc20-possible"),
        pytest.param(490.0, 20.0, [], [], id="490m-acc20-possible"),
    ],
)
def test_a_fix_near_the_yellow_radius(
    home: tuple[float, float],
    bearing: float,
    metres: float,
    acc: float,
    after_open: list[Change],
    fresh: list[Change],
) -> None:
    book = status_book(Status.YELLOW, home)
    fix = at(home, metres, secs(60), 4, acc=acc, bearing=bearing)
    assert float(distance_m(home[0], home[1], fix.lon, fix.lat)) == pytest.approx(metres, abs=1e-3)

    _, changes = evaluate(book, confirmed(book, home), [fix], DEBOUNCE)
    assert kinds(changes) == after_open

    _, changes = evaluate(book, SubjectState(), [fix], Debounce(1, 120))
    assert kinds(changes) == fresh


@pytest.mark.parametrize("home", HOMES)
def test_a_possible_fix_neither_confirms_nor_clears(home: tuple[float, float]) -> None:
    book = status_book(Status.YELLOW, home)
    state, changes = evaluate(
        book,
        SubjectState(),
        [at(home, 510, secs(0), 1), at(home, 510, secs(10), 2)],
        DEBOUNCE,
    )
    assert changes == []
    state, changes = evaluate(book, state, [at(home, 510, secs(20), 3, acc=20.0)], DEBOUNCE)
    assert changes == []
    assert state.episodes["status:yellow"].count == 2  # neither grown nor ended

    state, changes = evaluate(book, state, [at(home, 510, secs(30), 4)], DEBOUNCE)
    assert kinds(changes) == [Change.OPEN]
    assert changes[0].episode.count == 3
    assert changes[0].episode.first.seq == 1

    state, changes = evaluate(book, state, [at(home, 490, secs(40), 5, acc=20.0)], DEBOUNCE)
    assert changes == []
    assert state.episodes["status:yellow"].confirmed


def test_a_fix_on_the_boundary_with_zero_accuracy_is_compliant() -> None:
    circle = Circle(ASTANA[0], ASTANA[1], 500.0)
    centre = ZoneEntry("z1", "home", circle, valid_from=T0 - timedelta(days=1))
    book = RuleBook(SUBJECT, "Asia/Almaty", zones=(centre,))
    fix = Fix("BR-0001", 1, T0, ASTANA[1], ASTANA[0], 0.0, "gnss", T0)
    _, changes = evaluate(book, SubjectState(), [fix], Debounce(1, 120))
    assert changes == []


# --- debounce -----------------------------------------------------------------------------


def test_the_first_fix_can_be_a_violation() -> None:
    book = status_book(Status.YELLOW, ASTANA)
    first = at(ASTANA, FAR, secs(0), 1)
    state, changes = evaluate(book, SubjectState(), [first], Debounce(1, 120))
    assert kinds(changes) == [Change.OPEN]
    assert changes[0].episode.first == first
    assert state.last_t == first.t


def test_confirmed_after_exactly_confirm_fixes_violating_fixes() -> None:
    book = status_book(Status.YELLOW, ASTANA)
    fixes = [at(ASTANA, FAR, secs(10 * i), i + 1) for i in range(4)]
    state = SubjectState()
    per_fix = []
    for f in fixes:
        state, changes = evaluate(book, state, [f], DEBOUNCE)
        per_fix.append(kinds(changes))
    assert per_fix == [[], [], [Change.OPEN], [Change.UPDATE]]


def test_confirmation_in_one_batch_names_the_confirming_fix() -> None:
    book = status_book(Status.YELLOW, ASTANA)
    fixes = [at(ASTANA, FAR, secs(10 * i), i + 1) for i in range(3)]
    state, changes = evaluate(book, SubjectState(), fixes, DEBOUNCE)
    (opened,) = changes
    assert opened.change is Change.OPEN
    assert (opened.subject_id, opened.fix, opened.late, opened.reason) == (
        SUBJECT,
        fixes[2],
        False,
        "",
    )
    ep = opened.episode
    assert (ep.first, ep.last, ep.count, ep.confirmed) == (fixes[0], fixes[2], 3, True)
    assert ep.rule.kind is AlertKind.ZONE_EXIT
    assert ep.worst_margin_m == pytest.approx(FAR - 500.0, abs=0.01)
    assert state.episodes == {"status:yellow": ep}


def test_confirmed_after_confirm_s_seconds_with_only_two_fixes() -> None:
    book = status_book(Status.YELLOW, ASTANA)
    state, changes = evaluate(book, SubjectState(), [at(ASTANA, FAR, secs(0), 1)], DEBOUNCE)
    assert changes == []
    state, changes = evaluate(book, state, [at(ASTANA, FAR, secs(120), 2)], DEBOUNCE)
    assert kinds(changes) == [Change.OPEN]
    assert changes[0].episode.count == 2


def test_not_confirmed_one_second_short_of_confirm_s() -> None:
    book = status_book(Status.YELLOW, ASTANA)
    fixes = [at(ASTANA, FAR, secs(0), 1), at(ASTANA, FAR, secs(119), 2)]
    _, changes = evaluate(book, SubjectState(), fixes, DEBOUNCE)
    assert changes == []


def test_time_confirmation_counts_fix_time_not_arrival() -> None:
    book = status_book(Status.YELLOW, ASTANA)
    slow = Debounce(confirm_fixes=10, confirm_s=120)
    fixes = [at(ASTANA, FAR, secs(s), i + 1) for i, s in enumerate((0, 60, 119, 120))]
    _, changes = one_by_one(book, fixes, slow)
    assert [(c.change, c.fix.seq) for c in changes] == [(Change.OPEN, 4)]


def test_the_defaults_confirm_within_5_fixes_and_5_minutes() -> None:
    assert Debounce().confirm_fixes <= 5
    assert Debounce().confirm_s <= 300


@PROPERTY
@given(st.lists(st.integers(1, 400), min_size=6, max_size=6))
def test_default_debounce_confirms_by_the_5th_fix_or_after_5_minutes(gaps: list[int]) -> None:
    book = status_book(Status.YELLOW, ASTANA)
    times = [0]
    for g in gaps:
        times.append(times[-1] + g)
    fixes = [at(ASTANA, FAR, secs(t), i + 1) for i, t in enumerate(times)]
    _, changes = evaluate(book, SubjectState(), fixes)

    opened = [i for i, c in enumerate(changes) if c.change is Change.OPEN]
    assert len(opened) == 1
    open_index = fixes.index(changes[opened[0]].fix)
    deadline = min(4, next(i for i, t in enumerate(times) if t >= 300 or i == 4))
    assert open_index <= deadline


# --- one episode, one alert ---------------------------------------------------------------


@pytest.mark.parametrize("batched", [True, False], ids=["one-batch", "fix-by-fix"])
def test_one_episode_is_one_open_then_updates_then_a_clear(batched: bool) -> None:
    book = status_book(Status.YELLOW, ASTANA)
    fixes = [at(ASTANA, FAR + 10 * i, secs(10 * i), i + 1) for i in range(6)]
    fixes.append(at(ASTANA, 100, secs(60), 7))  # back inside
    fixes.append(at(ASTANA, FAR, secs(70), 8))  # out again: a new episode starts

    if batched:
        state, changes = evaluate(book, SubjectState(), fixes, DEBOUNCE)
    else:
        state, changes = one_by_one(book, fixes)

    assert [(c.change, c.fix.seq, c.episode.count) for c in changes] == [
        (Change.OPEN, 3, 3),
        (Change.UPDATE, 4, 4),
        (Change.UPDATE, 5, 5),
        (Change.UPDATE, 6, 6),
        (Change.CLEAR, 7, 6),
    ]
    assert len({c.episode.key for c in changes}) == 1
    assert changes[-1].reason == "complied again"
    assert changes[-2].episode.last == fixes[5]
    assert changes[-2].episode.worst_margin_m == pytest.approx(FAR + 50 - 500, abs=0.01)
    (new_episode,) = state.episodes.values()
    assert (new_episode.first.seq, new_episode.count, new_episode.confirmed) == (8, 1, False)


def test_an_unconfirmed_episode_ends_silently_and_the_count_restarts() -> None:
    book = status_book(Status.YELLOW, ASTANA)
    fixes = [
        at(ASTANA, FAR, secs(0), 1),
        at(ASTANA, FAR, secs(10), 2),
        at(ASTANA, 0, secs(20), 3),
        at(ASTANA, FAR, secs(30), 4),
        at(ASTANA, FAR, secs(40), 5),
    ]
    state, changes = evaluate(book, SubjectState(), fixes, DEBOUNCE)
    assert changes == []
    assert state.episodes["status:yellow"].count == 2


def test_fixes_are_judged_in_fix_time_order_whatever_the_order_given() -> None:
    book = status_book(Status.YELLOW, ASTANA)
    fixes = [at(ASTANA, FAR, secs(10 * i), i + 1) for i in range(4)]
    fixes.append(at(ASTANA, 0, secs(40), 5))
    _, in_order = evaluate(book, SubjectState(), fixes, DEBOUNCE)
    _, reversed_ = evaluate(book, SubjectState(), fixes[::-1], DEBOUNCE)
    assert reversed_ == in_order
    assert kinds(in_order) == [Change.OPEN, Change.UPDATE, Change.CLEAR]


@PROPERTY
@given(
    st.lists(
        st.tuples(st.floats(0, 1000), st.floats(0, 30), st.integers(1, 200)),
        min_size=1,
        max_size=12,
    ),
    st.lists(st.integers(1, 4), max_size=12),
)
def test_splitting_fixes_into_uploads_changes_nothing(
    steps: list[tuple[float, float, int]], cuts: list[int]
) -> None:
    book = status_book(Status.YELLOW, ALMATY)
    fixes, t = [], 0
    for i, (metres, acc, gap) in enumerate(steps):
        t += gap
        fixes.append(at(ALMATY, metres, secs(t), i + 1, acc=acc, bearing=37.0 * i))
    _, whole = evaluate(book, SubjectState(), fixes, DEBOUNCE)

    state, pieces, start = SubjectState(), [], 0
    for size in [*cuts, len(fixes)]:
        state, changes = evaluate(book, state, fixes[start : start + size], DEBOUNCE)
        pieces += changes
        start += size
    assert pieces == whole


# --- the home beacon ----------------------------------------------------------------------


def _home_zone_book(home: tuple[float, float]) -> RuleBook:
    zone = ZoneEntry("home-1", "home", Circle(home[0], home[1], 50.0), T0 - timedelta(days=1))
    return RuleBook(SUBJECT, "Asia/Almaty", zones=(zone,))


@pytest.mark.parametrize(
    "book",
    [
        pytest.param(status_book(Status.RED, ASTANA), id="red-status"),
        pytest.param(_home_zone_book(ASTANA), id="home-zone"),
    ],
)
def test_a_beacon_fix_is_inside_the_home_whatever_its_coordinates(book: RuleBook) -> None:
    beacon = at(ASTANA, 5000, secs(100), 9, acc=5000.0, src="beacon")
    _, changes = evaluate(book, SubjectState(), [beacon], Debounce(1, 120))
    assert changes == []

    state = confirmed(book, ASTANA)
    state, changes = evaluate(book, state, [beacon], DEBOUNCE)
    assert [(c.change, c.fix.src) for c in changes] == [(Change.CLEAR, "beacon")]
    assert state.episodes == {}


def test_the_same_fix_from_gnss_is_a_violation() -> None:
    book = status_book(Status.RED, ASTANA)
    gnss = at(ASTANA, 5000, secs(100), 9, acc=5.0, src="gnss")
    _, changes = evaluate(book, SubjectState(), [gnss], Debounce(1, 120))
    assert kinds(changes) == [Change.OPEN]


# --- late fixes -------------------------------------------------------------------------


def _red_then_lifted() -> RuleBook:
    """Red at ASTANA until T0 + 1 h, when a green order lifts it."""
    green = StatusOrder(Status.GREEN, effective_at=secs(3600), recorded_at=secs(3600))
    return status_book(Status.RED, ASTANA, green)


def test_a_late_fix_is_judged_by_the_rules_of_its_own_time() -> None:
    book = _red_then_lifted()
    live = [at(ASTANA, FAR, secs(7200 + 10 * i), 100 + i) for i in range(3)]
    state, changes = evaluate(book, SubjectState(), live, DEBOUNCE)
    assert changes == []  # green now: nothing to break
    assert state.last_t == live[-1].t

    late = [at(ASTANA, FAR, secs(600 + 10 * i), 10 + i) for i in range(3)]
    new_state, changes = evaluate(book, state, late, DEBOUNCE)

    assert [(c.change, c.fix.seq, c.late) for c in changes] == [(Change.OPEN, 12, True)]
    ep = changes[0].episode
    assert (ep.rule.key, ep.first, ep.count) == ("status:red", late[0], 3)
    assert new_state == state  # the live state is unchanged


def test_a_late_fix_leaves_the_live_episode_as_it_was() -> None:
    book = status_book(Status.YELLOW, ASTANA)
    live = [at(ASTANA, FAR, secs(3600 + 10 * i), 100 + i) for i in range(3)]
    state, changes = evaluate(book, SubjectState(), live, DEBOUNCE)
    assert kinds(changes) == [Change.OPEN]

    # A compliant fix from before the episode does not clear it ...
    new_state, changes = evaluate(book, state, [at(ASTANA, 0, secs(60), 50)], DEBOUNCE)
    assert changes == []
    assert new_state == state
    # ... nor does a violating one extend it.
    new_state, changes = evaluate(book, state, [at(ASTANA, FAR, secs(70), 51)], DEBOUNCE)
    assert changes == []
    assert new_state == state


def test_late_and_live_fixes_in_one_upload() -> None:
    book = _red_then_lifted()
    state, _ = evaluate(book, SubjectState(), [at(ASTANA, FAR, secs(7200), 100)], DEBOUNCE)
    late = [at(ASTANA, FAR, secs(600 + 10 * i), 10 + i) for i in range(3)]
    live = [at(ASTANA, FAR, secs(7300), 101)]

    new_state, changes = evaluate(book, state, [*live, *late], DEBOUNCE)

    assert [(c.change, c.late) for c in changes] == [(Change.OPEN, True)]
    assert new_state.last_t == live[0].t
    assert new_state.episodes == {}


def test_a_fix_at_the_last_judged_time_is_not_late() -> None:
    book = status_book(Status.YELLOW, ASTANA)
    state, _ = evaluate(book, SubjectState(), [at(ASTANA, FAR, secs(0), 1)], Debounce(2, 120))
    _, changes = evaluate(book, state, [at(ASTANA, FAR, secs(0), 2)], Debounce(2, 120))
    assert [(c.change, c.late) for c in changes] == [(Change.OPEN, False)]


# --- rules that come and go ---------------------------------------------------------------


def test_lifting_the_status_clears_the_open_alert() -> None:
    book = _red_then_lifted()
    state = confirmed(book, ASTANA)
    _, changes = evaluate(book, state, [at(ASTANA, FAR, secs(3600), 20)], DEBOUNCE)
    assert [(c.change, c.reason) for c in changes] == [(Change.CLEAR, "rule no longer in force")]


def test_a_curfew_applies_only_within_its_schedule() -> None:
    # subject's zone: +05; no grace, to judge from the first minute
    schedule = parse({"weekly": [{"from": "21:00", "to": "07:00"}], "grace_min": 0})
    home = Circle(ASTANA[0], ASTANA[1], 50)
    zone = ZoneEntry("curfew-home", "home", home, T0 - timedelta(days=1), schedule=schedule)
    book = RuleBook(SUBJECT, "Asia/Almaty", zones=(zone,))
    evening = datetime(2026, 11, 22, 16, 0, tzinfo=UTC)  # 21:00 in Almaty
    fixes = [
        at(ASTANA, FAR, evening - timedelta(minutes=1), 1),  # 20:59: no curfew yet
        *(at(ASTANA, FAR, evening + timedelta(seconds=10 * i), 2 + i) for i in range(3)),
        at(ASTANA, FAR, evening + timedelta(hours=10), 5),  # 07:00: curfew over
    ]
    _, changes = evaluate(book, SubjectState(), fixes, DEBOUNCE)
    assert [(c.change, c.fix.seq, c.episode.rule.kind) for c in changes] == [
        (Change.OPEN, 4, AlertKind.CURFEW),
        (Change.CLEAR, 5, AlertKind.CURFEW),
    ]
    assert changes[1].reason == "rule no longer in force"


def _two_zone_book() -> RuleBook:
    since = T0 - timedelta(days=1)
    market = offset(ASTANA[0], ASTANA[1], 3000.0, 0.0)
    return RuleBook(
        SUBJECT,
        "Asia/Almaty",
        zones=(
            ZoneEntry("town", "inclusion", Circle(ASTANA[0], ASTANA[1], 1000.0), since),
            ZoneEntry("market", "exclusion", Circle(market[0], market[1], 200.0), since),
        ),
    )


def test_rejudge_only_considers_the_given_rule_keys() -> None:
    book = _two_zone_book()
    # In the market, which is outside the town: two rules broken.
    fixes = [at(ASTANA, 3000, secs(10 * i), i + 1, bearing=90.0) for i in range(3)]
    _, everything = evaluate(book, SubjectState(), fixes, DEBOUNCE)
    assert sorted(c.episode.rule.key for c in everything) == ["zone:market", "zone:town"]

    state, changes = rejudge(book, fixes, frozenset({"zone:market"}), DEBOUNCE)
    assert [(c.change, c.episode.rule.key, c.late) for c in changes] == [
        (Change.OPEN, "zone:market", False)
    ]
    assert set(state.episodes) == {"zone:market"}
    assert state.last_t == fixes[-1].t

    _, changes = rejudge(book, fixes, frozenset({"zone:elsewhere"}), DEBOUNCE)
    assert changes == []


# --- a rule that changes within one batch ----------------------------------------------


def _edited_zone_book() -> RuleBook:
    """Zone z1 moved 5 km east at T0 + 1 h: two versions of one zone id."""
    edit = secs(3600)
    moved = offset(ASTANA[0], ASTANA[1], 5000.0, 0.0)
    return RuleBook(
        SUBJECT,
        "Asia/Almaty",
        zones=(
            ZoneEntry("z1", "home", Circle(ASTANA[0], ASTANA[1], 100.0), T0, valid_until=edit),
            ZoneEntry("z1", "home", Circle(moved[0], moved[1], 100.0), valid_from=edit),
        ),
    )


def _moved_home_book() -> RuleBook:
    """A yellow order at ASTANA, then from T0 + 1 h a yellow order at a home 5 km east."""
    moved = offset(ASTANA[0], ASTANA[1], 5000.0, 0.0)
    second = StatusOrder(Status.YELLOW, secs(3600), secs(3600), home=(moved[0], moved[1]))
    return status_book(Status.YELLOW, ASTANA, second)


@pytest.mark.parametrize(
    "book",
    [
        pytest.param(_edited_zone_book(), id="zone-edited"),
        pytest.param(_moved_home_book(), id="home-moved"),
    ],
)
def test_a_batch_spanning_a_rule_change_is_judged_by_the_rule_of_each_fix(
    book: RuleBook,
) -> None:
    fixes = [
        at(ASTANA, 0, secs(3590), 1),  # at the old home, before the change
        *(at(ASTANA, 5000, secs(3600 + 10 * i), 2 + i, bearing=90.0) for i in range(3)),
    ]
    _, fix_by_fix = one_by_one(book, fixes)
    assert fix_by_fix == []
    _, batched = evaluate(book, SubjectState(), fixes, DEBOUNCE)
    assert batched == []


def test_zones_of_every_shape_are_judged_in_one_batch() -> None:
    """Rules are grouped by value within a batch: areas and corridors must group too."""
    since = T0 - timedelta(days=1)
    west = offset(ASTANA[0], ASTANA[1], -3000.0, 0.0)
    east = offset(ASTANA[0], ASTANA[1], 3000.0, 0.0)
    corners = [(-300, -300), (300, -300), (300, 300), (-300, 300), (-300, -300)]
    square = [offset(ASTANA[0], ASTANA[1], e, n) for e, n in corners]  # 600 m across
    book = RuleBook(
        SUBJECT,
        "Asia/Almaty",
        zones=(
            ZoneEntry("square", "exclusion", Area(Polygon(square)), since),
            ZoneEntry("route", "inclusion", Corridor(LineString([west, east]), 500.0), since),
        ),
    )
    fixes = [at(ASTANA, 0, secs(10 * i), i + 1) for i in range(3)]  # in the square, on route
    fixes += [at(ASTANA, 1000, secs(30 + 10 * i), i + 4) for i in range(3)]  # off route
    _, changes = evaluate(book, SubjectState(), fixes, DEBOUNCE)
    assert [(c.change, c.episode.rule.key, c.fix.seq) for c in changes] == [
        (Change.OPEN, "zone:square", 3),
        (Change.CLEAR, "zone:square", 4),
        (Change.OPEN, "zone:route", 6),
    ]


def test_a_curfew_has_a_grace_period_and_can_check_only_the_start() -> None:
    evening = datetime(2026, 11, 22, 16, 0, tzinfo=UTC)  # 21:00 in Almaty
    home = Circle(ASTANA[0], ASTANA[1], 50)
    late_walk = [
        at(ASTANA, FAR, evening + timedelta(minutes=m), i + 1) for i, m in enumerate((1, 2, 3, 4))
    ]  # 21:01-21:04, outside
    curfew = parse({"weekly": [{"from": "21:00", "to": "07:00"}]})  # default grace: 5 min
    zone = ZoneEntry("curfew-home", "home", home, T0 - timedelta(days=1), schedule=curfew)
    book = RuleBook(SUBJECT, "Asia/Almaty", zones=(zone,))
    _, changes = evaluate(book, SubjectState(), late_walk, DEBOUNCE)
    assert changes == []  # within the 5-minute grace
    later = [
        at(ASTANA, FAR, evening + timedelta(minutes=m), i + 10) for i, m in enumerate((6, 7, 8))
    ]
    _, changes = evaluate(book, SubjectState(), later, DEBOUNCE)
    assert [c.change for c in changes] == [Change.OPEN]

    # "Must be in at the start": only the quarter hour after 21:05 binds.
    at_start = parse({"weekly": [{"from": "21:00", "to": "07:00"}], "check": "start"})
    zone = ZoneEntry("curfew-home", "home", home, T0 - timedelta(days=1), schedule=at_start)
    book = RuleBook(SUBJECT, "Asia/Almaty", zones=(zone,))
    midnight = [
        at(ASTANA, FAR, evening + timedelta(hours=3, minutes=m), i + 20)
        for i, m in enumerate((0, 1, 2, 3))
    ]
    _, changes = evaluate(book, SubjectState(), midnight, DEBOUNCE)
    assert changes == []  # out at midnight is no breach of a start check
