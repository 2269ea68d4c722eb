"""The fleet's schedule, on fake clocks: no broker, the bracelets only journal."""

from __future__ import annotations

from pathlib import Path

from device_sim.fleet import Broker, Fleet, Progress
from device_sim.roster import plan_member

WALL0 = 1_763_816_700_000


class Clocks:
    def __init__(self) -> None:
        self.mono = 1000.0

    def monotonic(self) -> float:
        return self.mono

    def wall_ms(self) -> int:
        return WALL0 + round((self.mono - 1000.0) * 1000)


def _fleet(tmp_path: Path, clocks: Clocks, n: int, speedup: float = 1.0) -> Fleet:
    members = [plan_member(i, seed=1, prefix="T") for i in range(n)]
    return Fleet.build(
        members,
        Broker("127.0.0.1", 1),
        tmp_path,
        seed=1,
        speedup=speedup,
        fix_interval_s=15.0,
        breaker_fix_interval_s=5.0,
        clock=clocks.monotonic,
        wall_ms=clocks.wall_ms,
    )


def test_fixes_follow_each_devices_interval_with_wall_clock_times(tmp_path: Path) -> None:
    clocks = Clocks()
    fleet = _fleet(tmp_path, clocks, 3)
    for _ in range(60):  # one minute, a step a second
        fleet.make_fixes(clocks.monotonic())
        clocks.mono += 1.0
    breaker, other, _ = (w.bracelet for w in fleet.wearers)
    assert breaker.last_seq == 12  # every 5 s
    assert other.last_seq == 4  # every 15 s
    times = [r.body["t"] for r in breaker.unacked()]
    assert times == [WALL0 + i * 5000 for i in range(12)]


def test_the_breaker_is_noticed_leaving_and_coming_back(tmp_path: Path) -> None:
    clocks = Clocks()
    fleet = _fleet(tmp_path, clocks, 2, speedup=10.0)
    notices: list[str] = []
    for _ in range(200):  # 200 s of wall time, 2000 s of scenario
        fleet.make_fixes(clocks.monotonic(), notices.append)
        clocks.mono += 1.0
    assert len(notices) == 2
    assert notices[0].startswith("T-0001 (breaker) left its 500 m radius")
    assert notices[1].startswith("T-0001 (breaker) came back inside")
    # Fix intervals shrink with the speedup: 5 s of scenario is 0.5 s of wall time,
    # but a step of one second makes one fix a step.
    assert fleet.wearers[0].bracelet.last_seq == 200


def test_a_new_interval_by_command_takes_effect(tmp_path: Path) -> None:
    clocks = Clocks()
    fleet = _fleet(tmp_path, clocks, 2)
    other = fleet.wearers[1].bracelet
    fleet.make_fixes(clocks.monotonic())  # a fix now; the next one due in 15 s
    clocks.mono += 1.0
    other.receive(
        "em/v1/dev/T-0002/cmd",
        b'{"id": "c-1", "cmd": "set_interval", "args": {"fix_s": 2, "upload_s": 2}}',
    )
    for _ in range(9):
        fleet.make_fixes(clocks.monotonic())
        clocks.mono += 1.0
    fix_times = [r.body["t"] for r in other.unacked() if r.kind == "fix"]
    assert fix_times == [WALL0 + i * 2000 for i in range(5)]


def test_progress_line() -> None:
    line = Progress(12.4, 5, 4, 120, 118, 100, 20, 9.96).line()
    assert line == "     12s  connected 4/5  made 120  sent 118  acked 100  pending 20  10.0 rec/s"


def test_a_commuter_reports_its_days_battery_and_is_never_noticed(tmp_path: Path) -> None:
    clocks = Clocks()
    fleet = _fleet(tmp_path, clocks, 5, speedup=60.0)
    commuter = fleet.wearers[4]
    assert commuter.member.scenario == "commuter"
    notices: list[str] = []
    for _ in range(600):  # 10 minutes of wall time, 10 hours of the day
        fleet.make_fixes(clocks.monotonic(), notices.append)
        clocks.mono += 1.0
    assert not any(n.startswith("T-0005") for n in notices)
    batts = [r.body["batt"] for r in commuter.bracelet.unacked() if r.kind == "fix"]
    assert len(set(batts)) > 3, "the battery changes over the day"
    sources = {r.body["src"] for r in commuter.bracelet.unacked() if r.kind == "fix"}
    assert sources <= {"gnss", "wifi"}
