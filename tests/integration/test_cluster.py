"""Cluster mode with real servers: a 3-node NATS cluster, Mosquitto, PostgreSQL and two
or three `monitor serve` processes sharing the ingest.

Simulated bracelets stream signed uploads while a process is killed (SIGKILL), paused
past its claim (SIGSTOP), while a NATS node is killed, and while a third process joins.
Each time: the devices are acknowledged again, every acknowledged record is stored
exactly once, every partition has exactly one owner, and a violator walking out of its
home radius has one alert for its one episode.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from device_sim.device import Bracelet
from tests.client import Api
from tests.servers import Monitor, Mosquitto, NatsCluster, Postgres, wait_for

pytestmark = pytest.mark.integration

ADMIN = "cluster-admin-1"
PARTITIONS = 8
DEVICES = 8
HOME = (71.4304, 51.1282)  # lon, lat
OUTSIDE = (51.1420, 71.4304)  # lat, lon: about 1.5 km north of home


@dataclass
class Cluster:
    pg: Postgres
    broker: Mosquitto
    nats: NatsCluster
    workdir: Path
    services: list[Monitor] = field(default_factory=list)

    def add(self, name: str, start: bool = True) -> Monitor:
        service = Monitor(
            {
                "MONITOR_DATABASE_URL": self.pg.url,
                "MONITOR_MQTT_URL": f"mqtt://127.0.0.1:{self.broker.port}",
                "MONITOR_NATS_URL": self.nats.url,
                "MONITOR_ADMIN_PASSWORD": ADMIN,
                "MONITOR_INSTANCE": name,
                "MONITOR_CLUSTER__PARTITIONS": str(PARTITIONS),
                "MONITOR_CLUSTER__CLAIM_TIMEOUT_S": "3",
            },
            self.workdir / name,
        )
        self.services.append(service)
        if start:
            service.start()
        return service

    def view(self, via: Monitor | None = None) -> dict[str, list[int]]:
        service = via or next(s for s in self.services if s.proc is not None)
        api = Api.login(service.base_url, "admin", ADMIN)
        body = api.get("/api/v1/cluster")
        assert body["partitions"] == PARTITIONS
        return {p["instance"]: p["partitions"] for p in body["processes"]}


def _owned_once(view: dict[str, list[int]]) -> bool:
    every = [p for parts in view.values() for p in parts]
    return sorted(every) == list(range(PARTITIONS))


def _balanced(view: dict[str, list[int]], processes: int) -> bool:
    sizes = sorted(len(p) for p in view.values())
    return len(view) == processes and _owned_once(view) and sizes[-1] - sizes[0] <= 1


@pytest.fixture
def cluster(workdir: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    base = workdir / f"cluster-{request.node.name}"
    pg = Postgres(base / "pg")
    broker = Mosquitto(base / "mq")
    nats = NatsCluster(base / "nats", size=3)
    stack = Cluster(pg, broker, nats, base)
    try:
        pg.start()
        broker.start()
        nats.start()
        stack.add("monitor-a")
        stack.add("monitor-b")
        wait_for(lambda: _balanced(stack.view(), 2), 30, "an even split")
        yield stack
    finally:
        failed = request.node.rep_call.failed if hasattr(request.node, "rep_call") else True
        for s in stack.services:
            if s.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    with_signal(s, signal.SIGCONT)
            s.stop()
            if failed:
                print(f"--- {s.env['MONITOR_INSTANCE']}\n{s.log_tail(80)}")
        nats.stop()
        broker.stop()
        pg.stop()


def with_signal(service: Monitor, how: signal.Signals) -> None:
    assert service.proc is not None
    os.killpg(service.proc.pid, how)  # the service and its broker relay


@dataclass
class Fleet:
    devices: list[Bracelet]
    violator: Bracelet
    violator_subject: str


def _fleet(stack: Cluster, state: Path) -> Fleet:
    service = stack.services[0]
    api = Api.login(service.base_url, "admin", ADMIN)
    devices = []
    violator_subject = ""
    for i in range(DEVICES):
        subject = api.subject(f"CLUSTER-{i}")
        if i == 0:
            violator_subject = subject
            api.put(
                f"/api/v1/subjects/{subject}/status",
                {"status": "red", "home": list(HOME), "effective_at": "2026-01-01T00:00:00Z"},
            )
        creds = api.enrol(f"CL-{i:04d}", subject, signed=True, assigned_at="2026-01-01T00:00:00Z")
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
            batch_size=20,
        )
        device.start()
        devices.append(device)
    return Fleet(devices, devices[0], violator_subject)


def _stream(fleet: Fleet, seconds: float, midway: Callable[[], None] | None = None) -> None:
    """Fixes on every device for `seconds` (the violator outside its home all along),
    calling `midway` halfway through."""
    t_ms = int(datetime.now(UTC).timestamp() * 1000) - 3_600_000
    start = time.monotonic()
    fired = midway is None
    while time.monotonic() - start < seconds:
        for d in fleet.devices:
            t_ms += 10
            lat, lon = OUTSIDE if d is fleet.violator else (HOME[1], HOME[0])
            d.add_fix(t_ms, lat, lon, acc=5.0)
            d.poll(0)
        if not fired and time.monotonic() - start > seconds / 2:
            assert midway is not None
            midway()
            fired = True
        time.sleep(0.02)


def _settle(fleet: Fleet, timeout_s: float) -> float:
    """Poll until every device's records are all acknowledged; the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout_s
    while time.monotonic() < deadline:
        for d in fleet.devices:
            d.poll(0.01)
        if all(d.acked_upto == d.last_seq for d in fleet.devices):
            return time.monotonic() - start
    left = {d.device_id: (d.acked_upto, d.last_seq) for d in fleet.devices}
    raise AssertionError(f"not all acknowledged in {timeout_s}s: {left}")


def _check(stack: Cluster, fleet: Fleet) -> int:
    """Every acknowledged record stored once; the violator's one episode, one alert."""
    total = 0
    with psycopg.connect(stack.pg.url) as conn:
        for d in fleet.devices:
            rows = conn.execute(
                "SELECT seq, count(*) FROM fixes WHERE device_id = %s GROUP BY seq ORDER BY seq",
                (d.device_id,),
            ).fetchall()
            doubled = [r[0] for r in rows if r[1] != 1]
            assert doubled == [], f"{d.device_id}: stored twice: {doubled[:10]}"
            missing = sorted(set(range(1, d.last_seq + 1)) - {r[0] for r in rows})
            assert missing == [], f"{d.device_id}: acknowledged but missing: {missing[:10]}"
            total += len(rows)
        alerts = conn.execute(
            "SELECT kind, count(*) FROM alerts WHERE subject_id = %s GROUP BY kind",
            (fleet.violator_subject,),
        ).fetchall()
        assert dict(alerts).get("zone_exit") == 1, alerts
        others = conn.execute(
            "SELECT kind, device_id FROM alerts WHERE subject_id <> %s AND kind = 'zone_exit'",
            (fleet.violator_subject,),
        ).fetchall()
        assert others == []
    return total


def _close(fleet: Fleet) -> None:
    for d in fleet.devices:
        d.close(1)


def test_every_partition_has_one_owner(cluster: Cluster) -> None:
    a, b = cluster.services
    for via in (a, b):
        view = cluster.view(via)
        assert set(view) == {"monitor-a", "monitor-b"}
        assert _owned_once(view)
        assert sorted(len(p) for p in view.values()) == [PARTITIONS // 2] * 2


def test_a_killed_process_is_taken_over(cluster: Cluster, tmp_path: Path) -> None:
    a, b = cluster.services
    fleet = _fleet(cluster, tmp_path / "devices")
    killed_at: list[float] = []

    def kill() -> None:
        with_signal(a, signal.SIGKILL)
        assert a.proc is not None
        a.proc.wait(10)
        a.proc = None
        killed_at.append(time.monotonic())

    try:
        _stream(fleet, 10.0, kill)
        _settle(fleet, 60)
        # Acknowledged again well within the contract's 10 s of the death (the stream
        # ran on for half its length after the kill, so the backlog is the tail).
        assert time.monotonic() - killed_at[0] < 60
        stored = _check(cluster, fleet)
    finally:
        _close(fleet)
    assert stored >= 1500, f"only {stored} records streamed"
    view = cluster.view(b)
    assert view == {"monitor-b": list(range(PARTITIONS))}


def test_takeover_acknowledges_within_ten_seconds(cluster: Cluster, tmp_path: Path) -> None:
    """From a SIGKILL to every device acknowledged up to what it had sent by then."""
    a, _b = cluster.services
    fleet = _fleet(cluster, tmp_path / "devices")
    try:
        _stream(fleet, 4.0)
        _settle(fleet, 30)
        # Records sent while nobody may have their partition yet.
        with_signal(a, signal.SIGKILL)
        assert a.proc is not None
        a.proc.wait(10)
        a.proc = None
        died = time.monotonic()
        _stream(fleet, 1.0)
        _settle(fleet, 30)
        took = time.monotonic() - died
        assert took < 10, f"acknowledged {took:.1f}s after the death"
        _check(cluster, fleet)
    finally:
        _close(fleet)


def test_a_paused_process_commits_nothing(cluster: Cluster, tmp_path: Path) -> None:
    a, b = cluster.services
    fleet = _fleet(cluster, tmp_path / "devices")
    try:
        _stream(fleet, 3.0)
        with_signal(a, signal.SIGSTOP)
        # Past its claim timeout (3 s), b holds everything; a still believes it owns half.
        wait_for(lambda: cluster.view(b) == {"monitor-b": list(range(PARTITIONS))}, 30, "b alone")
        _stream(fleet, 3.0)
        with_signal(a, signal.SIGCONT)
        _stream(fleet, 3.0)
        _settle(fleet, 60)
        _check(cluster, fleet)
        # a finds its claims gone, commits nothing under them, and takes a share again.
        wait_for(lambda: len(cluster.view(b)) == 2 and _owned_once(cluster.view(b)), 30, "rejoin")
        log = a.log_tail(2000)
        assert "lost the claim connection" in log or "claimed by another process" in log, log
    finally:
        _close(fleet)


def test_a_nats_node_killed_loses_nothing(cluster: Cluster, tmp_path: Path) -> None:
    fleet = _fleet(cluster, tmp_path / "devices")
    try:
        _stream(fleet, 8.0, lambda: cluster.nats.nodes[0].stop(signal.SIGKILL))
        _settle(fleet, 90)
        stored = _check(cluster, fleet)
    finally:
        _close(fleet)
    assert stored >= 1000


def test_a_third_process_takes_a_share(cluster: Cluster, tmp_path: Path) -> None:
    fleet = _fleet(cluster, tmp_path / "devices")
    try:

        def join() -> None:
            cluster.add("monitor-c", start=False).start(wait_healthy=False)

        _stream(fleet, 8.0, join)
        c = cluster.services[2]
        wait_for(c.healthy, 60, "monitor-c healthy")
        wait_for(
            lambda: (
                len(cluster.view(c)) == 3
                and _owned_once(cluster.view(c))
                and all(len(p) >= PARTITIONS // 3 for p in cluster.view(c).values())
            ),
            30,
            "a three-way split",
        )
        _stream(fleet, 3.0)
        _settle(fleet, 60)
        _check(cluster, fleet)
    finally:
        _close(fleet)
