"""The servers every benchmark runs against, started the same way: PostgreSQL with
TimescaleDB and Mosquitto from their binaries on free loopback ports, in a fresh work
directory, and `monitor serve` connected to both with the bench's admin account."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import Monitor, Mosquitto, Postgres  # noqa: E402

__all__ = ["ADMIN_PASSWORD", "servers", "service"]

ADMIN_PASSWORD = "bench-admin"


def servers(
    prefix: str = "bench-", pg_settings: Mapping[str, str] | None = None
) -> tuple[Path, Postgres, Mosquitto]:
    """A work directory, and PostgreSQL and Mosquitto started in it."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    work.chmod(0o755)  # the postgres user writes under it
    pg, broker = Postgres(work / "pg"), Mosquitto(work / "mq")
    pg.start(pg_settings)
    broker.start()
    return work, pg, broker


def service(
    work: Path,
    pg: Postgres,
    broker: Mosquitto,
    env: Mapping[str, str] | None = None,
    name: str = "svc",
) -> Monitor:
    """The service (not started yet), on these servers; `env` adds or overrides settings;
    `name` is its directory in `work`, one for each process."""
    return Monitor(
        {
            "MONITOR_DATABASE_URL": pg.url,
            "MONITOR_MQTT_URL": f"mqtt://127.0.0.1:{broker.port}",
            "MONITOR_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "MONITOR_LOG_LEVEL": "WARNING",
            **(env or {}),
        },
        work / name,
    )
