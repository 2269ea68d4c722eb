"""Fixtures that start real servers from their binaries on free loopback ports."""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import Monitor, Mosquitto, Postgres

_counter = itertools.count()


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="monitor-tests-"))
    base.chmod(0o755)  # the postgres user must reach its data directory
    return base


@pytest.fixture(scope="session")
def postgres(workdir: Path) -> Iterator[Postgres]:
    pg = Postgres(workdir / "pg")
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def mosquitto(workdir: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(workdir / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def database_url(postgres: Postgres) -> str:
    """A fresh, empty database for one test."""
    return postgres.create_database(f"t{os.getpid()}_{next(_counter)}")


ADMIN_PASSWORD = "admin-secret-1"


@pytest.fixture
def monitor(
    database_url: str, mosquitto: Mosquitto, workdir: Path, request: pytest.FixtureRequest
) -> Iterator[Monitor]:
    """The real service (`monitor serve`) on a fresh database and the shared broker."""
    service = Monitor(
        env={
            "MONITOR_DATABASE_URL": database_url,
            "MONITOR_MQTT_URL": f"mqtt://127.0.0.1:{mosquitto.port}",
            "MONITOR_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "MONITOR_INSTANCE": f"monitor-{request.node.name[:40]}-{next(_counter)}",
            "MONITOR_LOG_LEVEL": "INFO",
        },
        workdir=workdir / "monitor",
    )
    service.start()
    yield service
    service.stop()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(service.log_tail(120))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep
