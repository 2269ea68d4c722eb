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


def test_compose_parses_and_has_the_four_services_with_health_checks() -> None:
    services = _compose()["services"]
    assert set(services) == {"timescaledb", "mosquitto", "monitor", "device-sim"}
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
