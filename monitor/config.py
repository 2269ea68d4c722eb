"""Service configuration, read once at start-up from the environment and a `.env` file.

Built by the command line and passed down; nothing reads the environment elsewhere.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["BrokerFiles", "ClusterSettings", "MqttEndpoint", "RuleDefaults", "Settings"]


class MqttEndpoint(BaseModel):
    """The broker address and the service's own credentials, parsed from `MONITOR_MQTT_URL`."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def parse(cls, url: str) -> MqttEndpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"MONITOR_MQTT_URL: unsupported scheme {parts.scheme!r}")
        tls = parts.scheme in ("mqtts", "ssl")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )


class BrokerFiles(BaseModel):
    """Where the service writes Mosquitto's password and ACL files when it runs the broker.

    Empty when the broker is someone else's: the service then only subscribes.
    """

    password_file: str | None = None
    acl_file: str | None = None
    # The broker's pid file: the service sends it SIGHUP to reload the files.
    pid_file: str | None = None


class RuleDefaults(BaseModel):
    """Debounce defaults, documented in the README; the contract caps both at 5."""

    confirm_fixes: int = Field(default=3, ge=1, le=5)
    confirm_s: float = Field(default=120.0, gt=0, le=300)


class ClusterSettings(BaseModel):
    """Cluster mode (with `MONITOR_NATS_URL`): how the device stream is divided."""

    # Fixed for the life of a deployment: a device's partition is its hash modulo this.
    partitions: int = Field(default=16, ge=1, le=1024)
    # A process silent this long (paused, cut off from the database) loses its claims.
    claim_timeout_s: float = Field(default=5.0, ge=1.0, le=60.0)
    # The MQTT client id of the cluster's bridge on each broker: whichever process holds
    # the bridge resumes this one persistent session.
    bridge_client_id: str = "monitor-bridge"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MONITOR_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    database_url: str = "postgresql://postgres@127.0.0.1:5432/monitor"
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    # With mqtts://: the CA that signed the broker's certificate (default: the system's).
    mqtt_ca_file: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    admin_password: SecretStr | None = None
    # Service instance name: the MQTT client id, so a restart resumes its broker session.
    instance: str = "monitor"
    # Tiles for the dashboard map; empty draws zones and positions without a base map.
    tile_url: str = ""
    broker: BrokerFiles = BrokerFiles()
    rules: RuleDefaults = RuleDefaults()
    # Ingest batching: a batch closes at this many messages or this many milliseconds.
    batch_max_messages: int = 500
    batch_max_ms: int = 20
    # Allocations between young garbage collections in the ingesting process. Python's
    # default, 700, ran them so often that they paused the event loop 5.7 % of the time
    # at 10,000 fixes/s; 20,000: 1.0 % (median of 30-s periods, measured). A batch's
    # objects mostly die before a collection comes, so fewer are scanned at all.
    gc_young_threshold: int = Field(default=20_000, ge=100)
    # A hole in a device's seq open this long becomes a data gap (protocol: 10 minutes).
    gap_timeout_s: float = 600.0
    # A `locate` not answered within this is reported (protocol: 3 minutes).
    locate_timeout_s: float = 180.0
    # Monitoring data is deleted this many days after a subject's last order ended (unless
    # a legal hold is active); the job runs daily in the service.
    retention_days: int = Field(default=60, ge=1)
    # Severity per alert kind, overriding the defaults (e.g. MONITOR_SEVERITY__BATTERY=warning).
    severity: dict[str, Literal["critical", "serious", "warning", "info"]] = Field(
        default_factory=dict
    )
    # A critical alert not acknowledged within this is escalated and pushed again.
    escalate_after_s: float = Field(default=300.0, gt=0)
    # Liveness: silence past a device's upload interval plus this is a comms loss; no fix
    # for this long while uploads go on is a location loss. Judged every N ticks (2 s).
    comms_buffer_s: float = Field(default=120.0, gt=0)
    location_loss_s: float = Field(default=900.0, gt=0)
    liveness_every_ticks: int = Field(default=15, ge=1)
    # False: this process serves the API and websockets only; another one ingests.
    ingest: bool = True
    # Cluster mode: NATS servers with JetStream, comma-separated; empty: one process
    # ingests straight from the broker.
    nats_url: str = ""
    cluster: ClusterSettings = ClusterSettings()
    log_level: str = "INFO"

    @property
    def nats_servers(self) -> list[str]:
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]

    @property
    def mqtt(self) -> MqttEndpoint:
        return MqttEndpoint.parse(self.mqtt_url)
