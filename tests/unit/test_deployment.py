"""docker-compose.yml cannot run here (no Docker engine): check what can be checked."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from monitor.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def _settings_variables() -> set[str]:
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        names.add(f"MONITOR_{name.upper()}")
        annotation = field.annotation
        sub = getattr(annotation, "model_fields", None)
        if sub:
            names.update(f"MONITOR_{name.upper()}__{s.upper()}" for s in sub)
    return names


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_compose_parses_and_has_its_services_with_health_checks() -> None:
    services = _compose()["services"]
    assert set(services) == {
        "timescaledb",
        "mosquitto",
        "nats-1",
        "nats-2",
        "nats-3",
        "monitor",
        "monitor-2",
        "device-sim",
    }
    image = services["timescaledb"]["image"]
    assert re.fullmatch(r"timescale/timescaledb:\d+\.\d+\.\d+-pg15", image)
    assert services["mosquitto"]["image"] == "eclipse-mosquitto:2"
    for name in ("timescaledb", "mosquitto", "monitor"):
        assert "healthcheck" in services[name], name
    mounted = services["mosquitto"]["volumes"][0].split(":")[0]
    assert (ROOT / mounted).is_file()


def test_every_monitor_variable_in_compose_and_env_example_is_read_by_the_service() -> None:
    known = _settings_variables()
    used: set[str] = set()
    for service in _compose()["services"].values():
        env = service.get("environment") or {}
        used.update(k for k in env if k.startswith("MONITOR_"))
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            used.add(line.split("=", 1)[0])
    assert used, "nothing to check"
    assert used <= known, f"not read by the service: {sorted(used - known)}"


def test_the_contract_variables_are_read() -> None:
    contract = {
        "MONITOR_DATABASE_URL",
        "MONITOR_MQTT_URL",
        "MONITOR_HTTP_HOST",
        "MONITOR_HTTP_PORT",
        "MONITOR_ADMIN_PASSWORD",
    }
    assert contract <= _settings_variables()


def test_compose_runs_cluster_mode_over_a_three_node_nats_cluster() -> None:
    """Two monitor processes on the same database and broker, each its own instance,
    both given every NATS server; the NATS servers routed to each other with JetStream."""
    services = _compose()["services"]
    monitors = [services["monitor"]["environment"], services["monitor-2"]["environment"]]
    assert monitors[0]["MONITOR_DATABASE_URL"] == monitors[1]["MONITOR_DATABASE_URL"]
    assert monitors[0]["MONITOR_MQTT_URL"] == monitors[1]["MONITOR_MQTT_URL"]
    assert monitors[0]["MONITOR_INSTANCE"] != monitors[1]["MONITOR_INSTANCE"]
    nodes = ["nats-1", "nats-2", "nats-3"]
    for env in monitors:
        servers = Settings(nats_url=env["MONITOR_NATS_URL"]).nats_servers
        assert servers == [f"nats://{n}:4222" for n in nodes]
    for node in nodes:
        command = services[node]["command"]
        assert "-js" in command
        assert command[command.index("-n") + 1] == node
        routes = command[command.index("--routes") + 1].split(",")
        assert sorted(routes) == [f"nats://{n}:6222" for n in nodes if n != node]
        assert "healthcheck" in services[node]
