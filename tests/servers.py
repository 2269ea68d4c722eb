"""Real servers started from their binaries on free loopback ports: PostgreSQL with
TimescaleDB (as the `postgres` user, since PostgreSQL refuses to run as root), Mosquitto
with a generated configuration, and the monitor service itself.

Used by the test fixtures and by the local run (`scripts/run.sh`), so both start the
servers the same way. No pytest import here.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Monitor", "Mosquitto", "Postgres", "free_port", "wait_for"]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: object, timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Poll `check()` until it returns true, or fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception as exc:  # a server not up yet answers with connection errors
            last = exc
        time.sleep(interval_s)
    raise TimeoutError(f"{what} not ready after {timeout_s}s (last error: {last!r})")


def _stop(proc: subprocess.Popen[bytes] | None, how: signal.Signals, wait_s: float = 15) -> None:
    """Signal a server and wait for it; kill it if it outlives `wait_s`."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(how)
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _as_postgres() -> dict[str, object]:
    """subprocess arguments that drop root to the postgres user."""
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam("postgres")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


@dataclass
class Postgres:
    """A PostgreSQL 15 cluster with TimescaleDB preloaded, in `datadir`."""

    datadir: Path
    port: int = field(default_factory=free_port)
    log_file: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/monitor"

    def url_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def log_path(self) -> Path:
        return self.log_file or self.datadir.parent / f"{self.datadir.name}.log"

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def init(self) -> None:
        if (self.datadir / "PG_VERSION").exists():
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._chown(self.datadir)
        self.datadir.chmod(0o700)
        subprocess.run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            cwd="/",
            **_as_postgres(),  # type: ignore[arg-type]
        )

    def start(self, settings: Mapping[str, str] | None = None) -> None:
        self.init()
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.datadir}'",
            "shared_preload_libraries": "'timescaledb'",
            "timescaledb.telemetry_level": "off",
            "max_connections": "200",
            "shared_buffers": "256MB",
            "synchronous_commit": "on",
            "fsync": "on",
        }
        conf.update(settings or {})
        options = " ".join(f"-c {k}={v}" for k, v in conf.items())
        log = self.log_path
        log.touch(exist_ok=True)
        self._chown(log)
        self.proc = subprocess.Popen(
            [str(PG_BIN / "postgres"), "-D", str(self.datadir), *options.replace("'", "").split()],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            cwd="/",
            start_new_session=True,
            **_as_postgres(),  # type: ignore[arg-type]
        )
        wait_for(self._ready, 60, f"PostgreSQL on port {self.port} (log: {log})")
        self._ensure_database("monitor")

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {self.proc.returncode}")
        result = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            check=False,
        )
        return result.returncode == 0

    def psql(self, sql: str, dbname: str = "monitor") -> str:
        result = subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                dbname,
                "-v",
                "ON_ERROR_STOP=1",
                "-qAtc",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout

    def _ensure_database(self, name: str) -> None:
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'", "postgres")
        if not exists.strip():
            self.psql(f'CREATE DATABASE "{name}"', "postgres")

    def create_database(self, name: str) -> str:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', "postgres")
        self.psql(f'CREATE DATABASE "{name}"', "postgres")
        return self.url_for(name)

    def stop(self, how: signal.Signals = signal.SIGINT) -> None:
        """SIGINT is PostgreSQL's fast shutdown; SIGKILL simulates a crash, of the whole
        process group (a backend left alive would hold the shared memory and stop the
        restart)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            if how == signal.SIGKILL:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.send_signal(how)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@dataclass
class Mosquitto:
    """A Mosquitto broker on loopback with a generated configuration.

    Anonymous by default (a development broker); with `password_file`/`acl_file` it
    requires credentials and applies the ACL that the service writes.
    """

    workdir: Path
    port: int = field(default_factory=free_port)
    password_file: Path | None = None
    acl_file: Path | None = None
    # (CA certificate, server certificate, server key): a TLS-only listener.
    tls: tuple[Path, Path, Path] | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def conf_file(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "mosquitto.pid"

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            *(
                [
                    f"cafile {self.tls[0]}",
                    f"certfile {self.tls[1]}",
                    f"keyfile {self.tls[2]}",
                    "tls_version tlsv1.2",
                ]
                if self.tls is not None
                else []
            ),
            f"pid_file {self.pid_file}",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "autosave_interval 30",
            # The defaults (1000 queued, 20 in flight) silently drop a fast QoS 1 stream
            # to one subscriber; devices resend until acknowledged, but make room anyway.
            "max_queued_messages 1000000",
            "max_inflight_messages 1000",
            "max_packet_size 1048576",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.geteuid() == 0:
            # A loopback development broker: staying root keeps its files (written by
            # the service, also root here) readable without a chown dance.
            lines.append("user root")
        if self.password_file is not None:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
            if self.acl_file is not None:
                lines.append(f"acl_file {self.acl_file}")
        else:
            lines.append("allow_anonymous true")
        self.conf_file.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self.write_config()
        for f in (self.password_file, self.acl_file):
            if f is not None and not f.exists():
                f.touch()
                f.chmod(0o600)
        log = self.workdir / "mosquitto.log"
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf_file)],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(
            lambda: self._alive() and _port_open(self.port),
            20,
            f"Mosquitto on port {self.port} (log: {log})",
        )

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {self.proc.returncode}")
        return True

    def reload(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)

    def stop(self, how: signal.Signals = signal.SIGTERM) -> None:
        _stop(self.proc, how)
        self.proc = None


NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


@dataclass
class NatsNode:
    """One nats-server with JetStream, on loopback; several form a cluster by routes."""

    workdir: Path
    name: str
    port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    routes: list[int] = field(default_factory=list)  # the other nodes' cluster ports
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / f"{self.name}.conf"
        lines = [
            f"server_name: {self.name}",
            "host: 127.0.0.1",
            f"port: {self.port}",
            f'jetstream {{ store_dir: "{self.workdir / self.name}" }}',
        ]
        if self.routes:
            routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.routes)
            lines.append(
                f"cluster {{ name: monitor, host: 127.0.0.1, port: {self.cluster_port},"
                f" routes: [{routes}] }}"
            )
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, wait: bool = True) -> None:
        conf = self.write_config()
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-c", str(conf)],
            stdout=self.log_file.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            wait_for(
                lambda: _port_open(self.port), 20, f"nats-server {self.name} ({self.log_file})"
            )

    def stop(self, how: signal.Signals = signal.SIGTERM) -> None:
        _stop(self.proc, how)
        self.proc = None


@dataclass
class NatsCluster:
    """`size` NATS servers routed to each other (size 1: a single node, no cluster)."""

    workdir: Path
    size: int = 3
    nodes: list[NatsNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes = [NatsNode(self.workdir, f"n{i}") for i in range(self.size)]
            if self.size > 1:
                for node in self.nodes:
                    node.routes = [o.cluster_port for o in self.nodes if o is not node]

    @property
    def url(self) -> str:
        return ",".join(n.url for n in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start(wait=False)
        for node in self.nodes:
            wait_for(lambda n=node: _port_open(n.port), 20, f"nats-server {node.name}")
        # JetStream answers once the cluster has a meta leader.
        wait_for(self._jetstream_ready, 30, "a JetStream meta leader", interval_s=0.25)

    def _jetstream_ready(self) -> bool:
        import asyncio

        import nats

        async def ask() -> bool:
            nc = await nats.connect(self.nodes[0].url, connect_timeout=1, allow_reconnect=False)
            try:
                await nc.jetstream().account_info()
                return True
            except Exception:
                return False
            finally:
                await nc.close()

        try:
            return asyncio.run(ask())
        except Exception:
            return False

    def stop(self, how: signal.Signals = signal.SIGTERM) -> None:
        for node in self.nodes:
            node.stop(how)


@dataclass
class Monitor:
    """The real service, `monitor serve`, in its own process (uvicorn inside)."""

    env: dict[str, str]
    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / f"monitor-{self.port}.log"

    def start(self, wait_healthy: bool = True) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
        env.update(self.env)
        env["MONITOR_HTTP_HOST"] = "127.0.0.1"
        env["MONITOR_HTTP_PORT"] = str(self.port)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "serve"],
            env=env,
            cwd=self.workdir,
            stdout=self.log_file.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait_healthy:
            wait_for(
                self.healthy,
                60,
                f"monitor on port {self.port} (log: {self.log_file})",
                interval_s=0.1,
            )

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"monitor exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, how: signal.Signals = signal.SIGTERM) -> None:
        _stop(self.proc, how, wait_s=20)
        self.proc = None


@contextlib.contextmanager
def running(*servers: Postgres | Mosquitto | Monitor | NatsCluster) -> Iterator[None]:
    try:
        yield
    finally:
        for s in reversed(servers):
            s.stop()
