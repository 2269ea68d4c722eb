"""monitor.rules.transitions: enter and exit events between sure positions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from geofences.geodesy import offset
from geofences.model import Circle
from monitor.domain import Fix
from monitor.rules.book import RuleBook, ZoneEntry
from monitor.rules.transitions import transitions

HOME = (71.4304, 51.1282)
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def _fix(seq: int, east: float, acc: float = 5.0, src: str = "gnss") -> Fix:
    lon, lat = offset(HOME[0], HOME[1], east, 0.0)
    return Fix("D1", seq, T0 + timedelta(seconds=seq), lat, lon, acc, src, T0)


def _book() -> RuleBook:
    home = ZoneEntry("h", "home", Circle(HOME[0], HOME[1], 100.0), T0 - timedelta(days=1))
    return RuleBook("s", "Asia/Almaty", zones=(home,))


def test_exit_and_entry_between_sure_positions() -> None:
    state, found = transitions(_book(), {}, [_fix(1, 0), _fix(2, 300), _fix(3, 10)])
    assert [(t.fix.seq, t.entered) for t in found] == [(2, False), (3, True)]
    assert state == {"zone:h": True}


def test_a_straddling_fix_changes_nothing_and_the_first_is_no_transition() -> None:
    # 95 m from home with 20 m accuracy straddles the 100 m boundary.
    state, found = transitions(_book(), {}, [_fix(1, 95, acc=20), _fix(2, 300)])
    assert found == []
    assert state == {"zone:h": False}
    _, found = transitions(_book(), state, [_fix(3, 500, src="beacon")])
    assert [(t.fix.seq, t.entered) for t in found] == [(3, True)]  # beacon: at home
