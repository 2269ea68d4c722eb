"""Every record the backend acknowledged is stored exactly once, whatever crashes.

Simulated bracelets stream fixes while the service is killed with SIGKILL mid-batch,
while the broker is killed, and while PostgreSQL is killed; each is restarted, the
devices resend what was not acknowledged, and then, per device, the stored seqs are
exactly 1..N with none twice and none missing.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from device_sim.device import Bracelet
from tests.client import Api
from tests.servers import Monitor, Mosquitto, Postgres, wait_for

pytestmark = pytest.mark.integration

DEVICES = 8
ADMIN = "crash-admin-1"


@dataclass
class Stack:
    pg: Postgres
    broker: Mosquitto
    service: Monitor


@pytest.fixture
def stack(workdir: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    # Under the session's work directory: the postgres user must reach its data.
    tmp_path = workdir / f"crash-{request.node.name}"
    pg = Postgres(tmp_path / "pg")
    broker = Mosquitto(tmp_path / "mq")
    pg.start()
    broker.start()
    service = Monitor(
        {
            "MONITOR_DATABASE_URL": pg.url,
            "MONITOR_MQTT_URL": f"mqtt://127.0.0.1:{broker.port}",
            "MONITOR_ADMIN_PASSWORD": ADMIN,
            "MONITOR_INSTANCE": "monitor-crash",
        },
        tmp_path / "svc",
    )
    service.start()
    yield Stack(pg, broker, service)
    service.stop()
    broker.stop()
    pg.stop()


def _fleet(stack: Stack, state: Path) -> list[Bracelet]:
    api = Api.login(stack.service.base_url, "admin", ADMIN)
    devices = []
    for i in range(DEVICES):
        subject = api.subject(f"CRASH-{i}")
        creds = api.enrol(f"CR-{i:04d}", subject, signed=True, assigned_at="2026-01-01T00:00:00Z")
        device = Bracelet(
            creds["device_id"],
            "127.0.0.1",
            stack.broker.port,
            creds["mqtt_username"],
            creds["mqtt_password"],
            signing_key=creds["signing_key"],
            state_dir=state / creds["device_id"],
            fix_interval_s=0.05,
            upload_interval_s=0.1,
            resend_after_s=3.0,
            batch_size=50,
        )
        device.start()
        devices.append(device)
    return devices


def _stream(devices: list[Bracelet], seconds: float, midway: Callable[[], None]) -> None:
    """Make fixes on every device for `seconds`, calling `midway` halfway through."""
    t_ms = int(datetime.now(UTC).timestamp() * 1000) - 3_600_000
    start = time.monotonic()
    fired = False
    while time.monotonic() - start < seconds:
        for d in devices:
            t_ms += 10
            d.add_fix(t_ms, 51.1282, 71.4304, acc=5.0)
            d.poll(0)
        if not fired and time.monotonic() - start > seconds / 2:
            midway()
            fired = True
        time.sleep(0.01)  # ~100 fixes per device per second, paced


def _settle(devices: list[Bracelet], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for d in devices:
            d.poll(0.01)
        if all(d.acked_upto == d.last_seq for d in devices):
            return
    left = {d.device_id: (d.acked_upto, d.last_seq) for d in devices}
    raise AssertionError(f"not all acknowledged in {timeout_s}s: {left}")


def _check(stack: Stack, devices: list[Bracelet]) -> int:
    total = 0
    with psycopg.connect(stack.pg.url) as conn:
        for d in devices:
            rows = conn.execute(
                "SELECT seq, count(*) FROM fixes WHERE device_id = %s GROUP BY seq ORDER BY seq",
                (d.device_id,),
            ).fetchall()
            seqs = [r[0] for r in rows]
            doubled = [r[0] for r in rows if r[1] != 1]
            assert doubled == [], f"{d.device_id}: stored twice: {doubled[:10]}"
            # The boot-free journal numbers fixes 1..N; every one was acknowledged.
            missing = sorted(set(range(1, d.last_seq + 1)) - set(seqs))
            assert missing == [], f"{d.device_id}: acknowledged but missing: {missing[:10]}"
            total += len(seqs)
    return total


def _run(stack: Stack, tmp_path: Path, crash: Callable[[], None]) -> int:
    devices = _fleet(stack, tmp_path / "devices")
    try:
        _stream(devices, 8.0, crash)
        _settle(devices, 90)
        stored = _check(stack, devices)
    finally:
        for d in devices:
            d.close(1)
    assert stored >= 2000, f"only {stored} records streamed"
    return stored


def _relays(parent: int | None = None) -> list[int]:
    """The broker relays running (children of `parent`, if given)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if b"monitor.ingest.relay" in cmdline and (parent is None or ppid == parent):
            found.append(int(proc.name))
    return found


def test_service_killed_mid_batch(stack: Stack, tmp_path: Path) -> None:
    def crash() -> None:
        assert stack.service.proc is not None
        relays = _relays(stack.service.proc.pid)
        assert len(relays) == 1, relays
        stack.service.stop(signal.SIGKILL)
        # The service's broker relay ends with it (its stdin closes): no orphan holds
        # the service's MQTT session against the restarted service.
        wait_for(lambda: not set(relays) & set(_relays()), 10, "the old relay gone")
        stack.service.start(wait_healthy=False)

    _run(stack, tmp_path, crash)


def test_broker_relay_killed(stack: Stack, tmp_path: Path) -> None:
    """The child process holding the service's broker connection dies: the service
    starts another, and the broker delivers again what was not acknowledged."""

    def crash() -> None:
        assert stack.service.proc is not None
        relays = _relays(stack.service.proc.pid)
        assert len(relays) == 1, relays
        os.kill(relays[0], signal.SIGKILL)

    _run(stack, tmp_path, crash)
    assert stack.service.proc is not None
    assert len(_relays(stack.service.proc.pid)) == 1
    assert "the broker relay exited" in stack.service.log_tail(400)


def test_broker_killed(stack: Stack, tmp_path: Path) -> None:
    def crash() -> None:
        stack.broker.stop(signal.SIGKILL)
        stack.broker.start()

    _run(stack, tmp_path, crash)


def test_postgres_killed(stack: Stack, tmp_path: Path) -> None:
    def crash() -> None:
        stack.pg.stop(signal.SIGKILL)
        stack.pg.start()

    _run(stack, tmp_path, crash)
