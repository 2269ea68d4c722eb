"""Progress of a long `device-sim run`: on a terminal, a block of lines redrawn in place
(devices connected, records made, sent and acknowledged, rates with a sparkline of the
last minute); anywhere else, one plain line per report, fit for logs and pipes.

Standard library only, with ANSI escapes: `\\x1b[{n}F` moves to the start of the line n
lines up and `\\x1b[J` clears to the end of the screen, which every terminal emulator in
use understands.
"""

from __future__ import annotations

import shutil
from collections import deque
from collections.abc import Callable
from typing import Literal, TextIO

from device_sim.fleet import Progress

__all__ = ["Display", "Mode", "bar", "sparkline"]

Mode = Literal["auto", "tty", "plain"]

_SPARKS = "▁▂▃▄▅▆▇█"


def bar(fraction: float, width: int = 24) -> str:
    """A bar of `width` cells, `fraction` of them full (eighths of a cell drawn)."""
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[part] if part else ""
    return ("█" * full + partial).ljust(width, "·")[:width]


def sparkline(values: list[float]) -> str:
    """One character per value, scaled to the largest."""
    if not values:
        return ""
    top = max(values)
    if top <= 0:
        return _SPARKS[0] * len(values)
    return "".join(_SPARKS[min(7, int(v / top * 7.999))] for v in values)


def _n(value: int) -> str:
    return f"{value:,}"


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Display:
    """Shows `Progress` snapshots on `stream`: in place on a terminal, else as lines."""

    def __init__(
        self,
        stream: TextIO,
        mode: Mode = "auto",
        title: str = "device-sim run",
        width: Callable[[], int] = lambda: shutil.get_terminal_size((100, 24)).columns,
    ) -> None:
        self.stream = stream
        isatty = getattr(stream, "isatty", lambda: False)
        self.tty = mode == "tty" or (mode == "auto" and bool(isatty()))
        self.title = title
        self._width = width
        self._drawn = 0  # lines of the block on screen
        self._last: Progress | None = None
        self._made_rates: deque[float] = deque(maxlen=60)
        self._acked_rate = 0.0
        self._acked_rates: deque[float] = deque(maxlen=60)

    def update(self, p: Progress) -> None:
        if self._last is not None and p.elapsed_s > self._last.elapsed_s:
            dt = p.elapsed_s - self._last.elapsed_s
            self._acked_rate = max(0.0, (p.acked - self._last.acked) / dt)
        elif self._last is None and p.elapsed_s > 0:
            self._acked_rate = p.acked / p.elapsed_s
        self._made_rates.append(p.rate)
        self._acked_rates.append(self._acked_rate)
        self._last = p
        if self.tty:
            self._redraw(self.lines(p))
        else:
            print(f"{p.line()}  acked {self._acked_rate:.1f} rec/s", file=self.stream, flush=True)

    def notice(self, text: str) -> None:
        """A one-off message (a wearer crossing its radius): above the block."""
        if self.tty:
            self._clear()
            print(text, file=self.stream)
            if self._last is not None:
                self._redraw(self.lines(self._last))
            self.stream.flush()
        else:
            print(f"         {text}", file=self.stream, flush=True)

    def finish(self, p: Progress) -> None:
        """The final figures, left on screen (or as a last line)."""
        if self.tty:
            self.update(p)
            self._drawn = 0  # leave the block where it is
            print(f"stopped after {_clock(p.elapsed_s)}", file=self.stream, flush=True)
        else:
            print(f"stopped: {p.line()}", file=self.stream, flush=True)

    def lines(self, p: Progress) -> list[str]:
        """The block for a terminal."""
        connected = p.connected / p.devices if p.devices else 0.0
        acked = p.acked / p.made if p.made else 1.0
        resent = max(0, p.sent - p.made)  # earlier runs' leftovers count as resent
        lines = [
            f"{self.title} · {p.devices} device(s) · {_clock(p.elapsed_s)}",
            f"  connected {bar(connected)} {_n(p.connected)}/{_n(p.devices)}"
            + (f"   reconnects {_n(p.reconnects)}" if p.reconnects else ""),
            f"  acked     {bar(acked)} {_n(p.acked)}/{_n(p.made)} records this run",
            f"  records   made {_n(p.made)}  sent {_n(p.sent)} (resent {_n(resent)})  "
            f"pending {_n(p.pending)}",
            f"  uploads   {_n(p.uploads)} sent  {_n(p.acks_received)} acks received",
            f"  rate      made {p.rate:8.1f}/s {sparkline(list(self._made_rates))}",
            f"            acked {self._acked_rate:7.1f}/s {sparkline(list(self._acked_rates))}",
        ]
        width = max(20, self._width() - 1)
        return [line[:width] for line in lines]

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _redraw(self, lines: list[str]) -> None:
        self._clear()
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self._drawn = len(lines)
