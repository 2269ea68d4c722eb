"""Drives scenarios: prepares each (enrolment through the operator API), then plays them
all at once on one thread, every device's connection pumped by one selector, each
scenario resumed when what it waits for has happened."""

from __future__ import annotations

import contextlib
import logging
import selectors
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from device_sim.device import Bracelet
from device_sim.phone import Phone
from device_sim.scenarios.base import Context, Play, Scenario, Wait

__all__ = ["Outcome", "close_all", "play_all", "prepare_all", "pump"]

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    name: str
    ok: bool = False
    seconds: float = 0.0
    records: int = 0
    problem: str | None = None  # what it was still waiting for, or what went wrong


def pump(ctx: Context, timeout_s: float = 0.02) -> None:
    """One round of network traffic and timers for every device of the context."""
    endpoints: list[Bracelet | Phone] = [*ctx.bracelets.values(), *ctx.phones.values()]
    serviced: set[int] = set()
    with selectors.DefaultSelector() as selector:
        for i, e in enumerate(endpoints):
            sock = e.socket()
            if sock is None:
                continue
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if e.wants_write() else 0)
            with contextlib.suppress(ValueError, KeyError, OSError):
                selector.register(sock, events, i)
        if selector.get_map():
            for key, mask in selector.select(timeout_s):
                i = key.data
                endpoints[i].service(
                    bool(mask & selectors.EVENT_READ), bool(mask & selectors.EVENT_WRITE)
                )
                serviced.add(i)
        elif timeout_s > 0:
            time.sleep(timeout_s)
    for i, e in enumerate(endpoints):
        if i not in serviced:
            e.tick()


def _advance(play: Play) -> Wait | None:
    try:
        return next(play)
    except StopIteration:
        return None


def prepare_all(ctx: Context, scenarios: Sequence[Scenario], out: TextIO) -> None:
    """Enrol what every scenario needs (operator API errors propagate: nothing has been
    played then, and the devices made so far are closed)."""
    try:
        for s in scenarios:
            before = len(ctx.bracelets) + len(ctx.phones)
            s.prepare()
            devices = len(ctx.bracelets) + len(ctx.phones) - before
            print(f"  prepared {s.name:<16} {devices} device(s): {s.summary}", file=out, flush=True)
    except BaseException:
        close_all(ctx, drain_s=0.0, goodbye_s=0.0)
        raise
    print(
        f"prepared: {len(scenarios)} scenario(s), {len(ctx.bracelets) + len(ctx.phones)} "
        f"device(s), {len(ctx.expect.expectations)} expectation(s)",
        file=out,
        flush=True,
    )


def play_all(
    ctx: Context, scenarios: Sequence[Scenario], out: TextIO, timeout_s: float = 120.0
) -> list[Outcome]:
    """Play the prepared scenarios together until all are done or `timeout_s` has
    passed. Devices are closed cleanly at the end (those that vanished stay silent)."""
    clock = ctx.clock
    outcomes = {s.name: Outcome(s.name) for s in scenarios}
    start = clock()
    deadline = start + timeout_s
    plays: dict[str, Play] = {}
    waits: dict[str, Wait | None] = {}
    by_name = {s.name: s for s in scenarios}

    def step(name: str) -> None:
        outcome = outcomes[name]
        try:
            waits[name] = _advance(plays[name])
        except Exception as exc:  # a scenario's own failure ends it, not the others
            log.exception("scenario %s failed", name)
            waits[name] = None
            outcome.problem = f"{type(exc).__name__}: {exc}"
            outcome.seconds = clock() - start
            print(f"  FAILED {name}: {outcome.problem}", file=out, flush=True)
            return
        if waits[name] is None:
            outcome.ok = True
            outcome.seconds = clock() - start
            outcome.records = by_name[name].records
            print(
                f"  done   {name:<16} {outcome.records} record(s) in {outcome.seconds:.1f} s",
                file=out,
                flush=True,
            )

    decile = 0

    def report_acks() -> None:
        # A line at each tenth of the records acknowledged: progress for a person, and
        # marks for a test that injects faults at a point of the run.
        nonlocal decile
        acked, made = ctx.acked_fraction()
        while made and decile < 10 and acked * 10 >= (decile + 1) * made:
            decile += 1
            print(f"  acked  {decile * 10:3d}% ({acked}/{made} records)", file=out, flush=True)

    try:
        for s in scenarios:
            plays[s.name] = s.play()
            step(s.name)
        while any(w is not None for w in waits.values()) and clock() < deadline:
            pump(ctx)
            report_acks()
            for name, wait in list(waits.items()):
                if wait is None:
                    continue
                try:
                    ready = wait.check()
                except Exception as exc:  # an API read failing for good, for one
                    log.info("%s: waiting for %s: %s", name, wait.what, exc)
                    ready = False
                if ready:
                    step(name)
        for name, wait in waits.items():
            if wait is not None:
                outcomes[name].problem = f"still waiting for {wait.what} after {timeout_s:g} s"
                outcomes[name].seconds = clock() - start
                print(f"  FAILED {name}: {outcomes[name].problem}", file=out, flush=True)
    finally:
        close_all(ctx)
    return [outcomes[s.name] for s in scenarios]


def close_all(ctx: Context, drain_s: float = 3.0, goodbye_s: float = 2.0) -> None:
    """Let what is unacknowledged go out (up to `drain_s`), then say offline and
    disconnect every bracelet, and close every phone."""
    clock = ctx.clock
    bracelets = list(ctx.bracelets.values())
    deadline = clock() + drain_s
    while clock() < deadline and any(b.connected and b.pending for b in bracelets):
        pump(ctx)
    for b in bracelets:
        b.begin_close()
    deadline = clock() + goodbye_s
    while clock() < deadline and not all(b.offline_said for b in bracelets):
        pump(ctx)
    for b in bracelets:
        b.end_close()
    for p in ctx.phones.values():
        p.close(timeout_s=1.0)
