"""The progress display: a block redrawn in place on a terminal, lines elsewhere."""

from __future__ import annotations

import io

from device_sim.fleet import Progress
from device_sim.progress import Display, bar, sparkline


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _progress(elapsed: float, made: int, acked: int, connected: int = 4) -> Progress:
    return Progress(elapsed, 5, connected, made, made + 3, acked, made - acked, 10.0, 40, 38, 2)


def test_bars_and_sparklines() -> None:
    assert bar(0.0, 8) == "········"
    assert bar(1.0, 8) == "████████"
    assert bar(0.5, 8) == "████····"
    assert bar(2.0, 4) == "████"
    assert sparkline([0.0, 1.0, 2.0, 4.0]) == "▁▂▄█"
    assert sparkline([0.0, 0.0]) == "▁▁"
    assert sparkline([]) == ""


def test_off_a_terminal_each_report_is_a_line() -> None:
    out = io.StringIO()
    display = Display(out)
    assert not display.tty
    display.update(_progress(5.0, 100, 90))
    display.notice("SIM-0001 (breaker) left its 500 m radius")
    display.update(_progress(10.0, 200, 190))
    display.finish(_progress(12.0, 220, 220))
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("      5s  connected 4/5  made 100")
    assert lines[0].endswith("acked 18.0 rec/s")
    assert lines[1] == "         SIM-0001 (breaker) left its 500 m radius"
    assert lines[2].endswith("acked 20.0 rec/s")
    assert lines[3].startswith("stopped: ")
    assert "\x1b" not in out.getvalue()


def test_on_a_terminal_the_block_is_redrawn_in_place() -> None:
    out = Terminal()
    display = Display(out, width=lambda: 120)
    assert display.tty
    display.update(_progress(5.0, 100, 90))
    first = out.getvalue()
    assert "\x1b[" not in first  # nothing to move over yet
    block = first.splitlines()
    assert block[0].startswith("device-sim run · 5 device(s) · 00:00:05")
    assert "4/5" in block[1]
    assert "reconnects 2" in block[1]
    assert "90/100 records this run" in block[2]
    assert "38 acks received" in block[4]
    display.update(_progress(6.0, 110, 100))
    second = out.getvalue()[len(first) :]
    assert second.startswith(f"\x1b[{len(block)}F\x1b[J")  # back up and clear, then redraw
    display.notice("crossed")
    third = out.getvalue()[len(first) + len(second) :]
    assert third.startswith(f"\x1b[{len(block)}F\x1b[Jcrossed\n")


def test_a_narrow_terminal_cuts_lines() -> None:
    out = Terminal()
    Display(out, width=lambda: 30).update(_progress(5.0, 100, 90))
    assert max(len(line) for line in out.getvalue().splitlines()) <= 29


def test_the_mode_can_be_forced() -> None:
    assert Display(io.StringIO(), "tty").tty
    assert not Display(Terminal(), "plain").tty
