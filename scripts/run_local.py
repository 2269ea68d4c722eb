"""The local run: every server of the system on loopback, with data kept under
.local/run, plus a simulated fleet. Ctrl-C stops all of it."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import Monitor, Mosquitto, NatsCluster, Postgres  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--http-port", type=int, default=int(os.environ.get("MONITOR_HTTP_PORT", "8000"))
    )
    parser.add_argument("--pg-port", type=int, default=55432)
    parser.add_argument("--mqtt-port", type=int, default=11883)
    parser.add_argument("--devices", type=int, default=5)
    parser.add_argument("--no-fleet", action="store_true", help="start no simulated devices")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="monitor serve processes; 2 or more run cluster mode over NATS JetStream"
        " (HTTP ports from --http-port up)",
    )
    parser.add_argument(
        "--nats-nodes", type=int, default=3, help="NATS servers in cluster mode (default 3)"
    )
    args = parser.parse_args()
    clustered = args.processes > 1

    state = ROOT / ".local" / "run"
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o755)
    secret_file = state / "admin-password"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(12))
        secret_file.chmod(0o600)
    admin_password = secret_file.read_text().strip()

    service_secret = state / "mqtt-service-password"
    if not service_secret.exists():
        service_secret.write_text(secrets.token_urlsafe(18))
        service_secret.chmod(0o600)
    pg = Postgres(state / "pg", port=args.pg_port, log_file=state / "postgres.log")
    # The broker requires credentials: the service writes its password and ACL files
    # from the enrolled devices and makes it reload them (SIGHUP) on every enrolment.
    broker_dir = state / "mosquitto"
    broker = Mosquitto(
        broker_dir,
        port=args.mqtt_port,
        password_file=broker_dir / "passwd",
        acl_file=broker_dir / "acl",
    )
    nats = NatsCluster(state / "nats", size=args.nats_nodes) if clustered else None
    services = [
        Monitor(
            env={
                "MONITOR_DATABASE_URL": pg.url,
                "MONITOR_MQTT_URL": (
                    f"mqtt://monitor:{service_secret.read_text().strip()}@127.0.0.1:{broker.port}"
                ),
                "MONITOR_ADMIN_PASSWORD": admin_password,
                "MONITOR_BROKER__PASSWORD_FILE": str(broker_dir / "passwd"),
                "MONITOR_BROKER__ACL_FILE": str(broker_dir / "acl"),
                "MONITOR_BROKER__PID_FILE": str(broker.pid_file),
                "MONITOR_INSTANCE": f"monitor-{i + 1}" if clustered else "monitor",
                **({"MONITOR_NATS_URL": nats.url} if nats is not None else {}),
            },
            workdir=state,
            port=args.http_port + i,
        )
        for i in range(max(1, args.processes))
    ]
    service = services[0]
    fleet: subprocess.Popen[bytes] | None = None
    stopping = False

    def stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        print(f"starting PostgreSQL + TimescaleDB on 127.0.0.1:{pg.port} (data {pg.datadir})")
        pg.start()
        print(f"starting Mosquitto on 127.0.0.1:{broker.port}")
        broker.start()
        if nats is not None:
            print(f"starting {len(nats.nodes)} NATS server(s) with JetStream: {nats.url}")
            nats.start()
        for each in services:
            print(f"starting monitor serve on {each.base_url} (log {each.log_file})")
            each.start()
        if not args.no_fleet:
            fleet = subprocess.Popen(
                [
                    str(ROOT / ".venv" / "bin" / "device-sim"),
                    "run",
                    "--api-url",
                    service.base_url,
                    "--admin-user",
                    "admin",
                    "--admin-password",
                    admin_password,
                    "--mqtt-url",
                    f"mqtt://127.0.0.1:{broker.port}",
                    "--devices",
                    str(args.devices),
                    "--state-dir",
                    str(state / "sim"),
                ],
                start_new_session=True,
            )
        print()
        print(f"  dashboard   {service.base_url}/")
        print(f"  API         {service.base_url}/api/v1   (OpenAPI: {service.base_url}/docs)")
        print(f"  live alerts ws://127.0.0.1:{service.port}/api/v1/alerts/live?token=...")
        print(f"  login       admin / {admin_password}   (kept in {secret_file})")
        if nats is not None:
            print(f"  cluster     {service.base_url}/api/v1/cluster ({len(services)} processes)")
        print("  Ctrl-C stops everything.\n", flush=True)
        while not stopping:
            for each in services:
                if each.proc is not None and each.proc.poll() is not None:
                    print("monitor serve exited:\n" + each.log_tail(), file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        print("\nstopping ...", flush=True)
        if fleet is not None and fleet.poll() is None:
            fleet.send_signal(signal.SIGINT)
            try:
                fleet.wait(15)
            except subprocess.TimeoutExpired:
                fleet.kill()
        for each in services:
            each.stop()
        if nats is not None:
            nats.stop()
        broker.stop()
        pg.stop()
        print("stopped.")


if __name__ == "__main__":
    sys.exit(main())
