"""Proof under faults: the whole scenario set runs, its uploads paced into a stream of
a few seconds, while the service, the broker or PostgreSQL is killed (SIGKILL) and
restarted: each twice in a run of its own (at 20 % and 60 % of the records
acknowledged), then all three in turn in one run (at 20, 50 and 80 %). The devices
resend what was not acknowledged, and then `device-sim check` must find every
acknowledged fix stored exactly once and every expected alert raised.

Negative controls: the same check must fail when one stored fix is deleted behind its
back, and when one expected alert is deleted.

Each test has its own PostgreSQL, Mosquitto and service, under the session's work
directory (the postgres user must reach its data directory). Everything is on loopback.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.servers import Monitor, Mosquitto, Postgres, wait_for

pytestmark = pytest.mark.integration

ADMIN = "faults-admin-1"
ROOT = Path(__file__).resolve().parents[2]
# Faults land at lines the run prints as the records are acknowledged: mid-stream.
TWICE = ("acked   20%", "acked   60%")
IN_TURN = ("acked   20%", "acked   50%", "acked   80%")
_stacks = itertools.count()


@dataclass
class Stack:
    pg: Postgres
    broker: Mosquitto
    service: Monitor
    home: Path

    def api_args(self) -> list[str]:
        return [
            "--api-url",
            self.service.base_url,
            "--admin-user",
            "admin",
            "--admin-password",
            ADMIN,
        ]


@pytest.fixture
def stack(workdir: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    # Short: PostgreSQL's socket path under it must stay within 107 bytes.
    home = workdir / f"faults{next(_stacks)}"
    pg = Postgres(home / "pg")
    broker = Mosquitto(home / "mq")
    pg.start()
    broker.start()
    service = Monitor(
        {
            "MONITOR_DATABASE_URL": pg.url,
            "MONITOR_MQTT_URL": f"mqtt://127.0.0.1:{broker.port}",
            "MONITOR_ADMIN_PASSWORD": ADMIN,
            "MONITOR_INSTANCE": "monitor-faults",
        },
        home / "svc",
    )
    service.start()
    yield Stack(pg, broker, service, home)
    failed = request.node.rep_call.failed if hasattr(request.node, "rep_call") else False
    if failed:
        print(service.log_tail(80))
    service.stop()
    broker.stop()
    pg.stop()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "device_sim.cli", *args]


def _scenarios(
    stack: Stack,
    names: str,
    faults: list[tuple[str, Callable[[], None]]],
    timeout_s: float = 150.0,
) -> tuple[Path, list[str]]:
    """Run `device-sim scenario NAMES`, calling each fault when a line containing its
    mark appears (in order); returns the expect file and the lines printed."""
    state = stack.home / "sim"
    expect = state / "expected.json"
    argv = _cli(
        "scenario",
        names,
        *stack.api_args(),
        "--mqtt-url",
        f"mqtt://127.0.0.1:{stack.broker.port}",
        "--state-dir",
        str(state),
        "--seed",
        "7",
        "--expect-file",
        str(expect),
        "--timeout-s",
        str(timeout_s - 30),
        "--upload-gap-s",
        "0.15",
    )
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    printed: list[str] = []
    pending = list(faults)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                break
            printed.append(line)
            print(line)
            if pending and pending[0][0] in line:
                mark, fault = pending.pop(0)
                print(f"--- at {mark!r}: {fault.__name__}")
                fault()
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(10)
        if proc.stdout is not None:
            proc.stdout.close()
    output = "\n".join(printed)
    assert rc == 0, f"device-sim scenario exited {rc}:\n{output}"
    assert not pending, f"the run ended before every fault was injected:\n{output}"
    return expect, printed


def _check(stack: Stack, expect: Path) -> tuple[int, str]:
    result = subprocess.run(
        _cli("check", *stack.api_args(), "--expect-file", str(expect)),
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, result.stdout + result.stderr


def _acknowledged_fixes(output: str) -> int:
    return sum(int(n) for n in re.findall(r"(\d+) acknowledged fix\(es\) up to seq", output))


def _prove(stack: Stack, faults: list[tuple[str, Callable[[], None]]]) -> None:
    expect, printed = _scenarios(stack, "all", faults)
    rc, output = _check(stack, expect)
    print(output)
    assert rc == 0, f"device-sim check found differences after the faults:\n{output}"
    # Every scenario ran, every device's journal was compared, and nothing differed.
    assert sum(1 for line in printed if line.startswith("  done ")) == 13, "\n".join(printed)
    assert "0 difference(s)" in output
    assert _acknowledged_fixes(output) > 1000, output


def _kill_service(stack: Stack) -> Callable[[], None]:
    def kill_service() -> None:
        stack.service.stop(signal.SIGKILL)
        stack.service.start(wait_healthy=False)

    return kill_service


def _kill_broker(stack: Stack) -> Callable[[], None]:
    def kill_broker() -> None:
        stack.broker.stop(signal.SIGKILL)
        stack.broker.start()

    return kill_broker


def _kill_postgres(stack: Stack) -> Callable[[], None]:
    def kill_postgres() -> None:
        # The postmaster and every backend at once, as a crash of the machine would: a
        # backend outliving its postmaster keeps the shared memory, and the new one
        # refuses to start ("pre-existing shared memory block is still in use").
        assert stack.pg.proc is not None
        group = stack.pg.proc.pid  # started in a session of its own
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        stack.pg.stop(signal.SIGKILL)
        wait_for(lambda: not _alive_in_group(group), 30, "PostgreSQL's processes gone")
        stack.pg.start()

    return kill_postgres


def _alive_in_group(group: int) -> bool:
    """Whether a process of the group is alive (zombies, already dead, do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        state, pgrp = fields[0], int(fields[2])
        if pgrp == group and state != "Z":
            return True
    return False


@pytest.mark.parametrize("kill", [_kill_service, _kill_broker, _kill_postgres])
def test_scenarios_hold_when_one_server_is_killed_twice(
    stack: Stack, kill: Callable[[Stack], Callable[[], None]]
) -> None:
    fault = kill(stack)
    _prove(stack, [(mark, fault) for mark in TWICE])


def test_scenarios_hold_when_service_broker_and_postgres_are_killed_in_turn(
    stack: Stack,
) -> None:
    faults = [_kill_service(stack), _kill_broker(stack), _kill_postgres(stack)]
    _prove(stack, list(zip(IN_TURN, faults, strict=True)))


def test_the_check_fails_on_a_lost_fix_and_on_a_missing_alert(stack: Stack) -> None:
    expect, _ = _scenarios(stack, "leave-radius,duplicates,tamper", [])
    rc, output = _check(stack, expect)
    assert rc == 0, output
    doc = json.loads(expect.read_text())
    device = next(d for d in doc["devices"] if d["scenario"] == "leave-radius")["device_id"]

    with psycopg.connect(stack.pg.url, autocommit=True) as conn:
        # One stored fix deleted behind the backend's back. By its key: a ctid is only
        # unique within one chunk of the hypertable.
        row = conn.execute(
            "DELETE FROM fixes WHERE (device_id, seq) = ("
            " SELECT device_id, seq FROM fixes WHERE device_id = %s ORDER BY seq OFFSET 40 LIMIT 1)"
            " RETURNING *",
            (device,),
        ).fetchone()
        assert row is not None
        names = [c.name for c in conn.execute("SELECT * FROM fixes LIMIT 0").description or []]
        deleted = dict(zip(names, row, strict=True))
        rc, output = _check(stack, expect)
        assert rc == 1, output
        assert f"{device}: 1 acknowledged fix(es) not stored: seq {deleted['seq']}" in output

        # Put it back: the check passes again, so what fails next is the alert alone.
        columns = ", ".join(names)
        marks = ", ".join(["%s"] * len(names))
        conn.execute(f"INSERT INTO fixes ({columns}) VALUES ({marks})", row)
        rc, output = _check(stack, expect)
        assert rc == 0, output

        alert = conn.execute(
            "SELECT id FROM alerts WHERE device_id = %s AND kind = 'zone_exit'", (device,)
        ).fetchone()
        assert alert is not None
        conn.execute("DELETE FROM alert_events WHERE alert_id = %s", alert)
        conn.execute("DELETE FROM alerts WHERE id = %s", alert)
    rc, output = _check(stack, expect)
    assert rc == 1, output
    assert re.search(r"leave-radius: should exist .*zone_exit, " + re.escape(device), output), (
        output
    )
    assert "1 difference(s)" in output
