"""deploy/compose.yaml: `docker compose config` accepts it, and what it resolves to is the
deployment the kit promises (replicas, limits, hardening, start order, secrets)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from tests.deploy.conftest import COMPOSE_FILE, compose, compose_available
from tests.requirements import require

SERVICES = {"postgres", "init", "server", "proxy", "client"}


@pytest.fixture
def config() -> Any:
    return resolved({})


def resolved(env: dict[str, str]) -> Any:
    ok, reason = compose_available()
    require(ok, reason)
    proc = compose("config", "--format", "json", env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_config_is_valid() -> None:
    ok, reason = compose_available()
    require(ok, reason)
    proc = compose("config", "--quiet")
    assert proc.returncode == 0, proc.stderr


def test_config_is_valid_for_compose_v1() -> None:
    """Debian bookworm's docker-compose 1.29 (installed by `make compose` as root) accepts
    the same file: no top-level `name`, nothing newer than the Compose spec it knows."""
    v1 = shutil.which("docker-compose")
    require(v1 is not None, "docker-compose (v1) missing: make compose (as root)")
    assert v1 is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("YADML_")}
    proc = subprocess.run(
        [v1, "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_invalid_settings_are_refused() -> None:
    ok, reason = compose_available()
    require(ok, reason)
    proc = compose("config", "--quiet", env={"YADML_SERVER_REPLICAS": "two"})
    assert proc.returncode != 0
    assert "replicas" in proc.stderr


def test_services_and_defaults(config: Any) -> None:
    services = config["services"]
    assert set(services) == SERVICES
    assert services["server"]["deploy"]["replicas"] == 2
    assert services["client"]["deploy"]["replicas"] == 2
    assert services["server"]["image"] == "yadml-server:local"
    assert services["client"]["image"] == "yadml-client:local"
    assert services["postgres"]["image"] == "yadml-postgres:local"
    assert services["proxy"]["image"] == "yadml-proxy:local"
    # Only the proxy is published, and on the loopback interface unless told otherwise.
    published = {name for name, s in services.items() if s.get("ports")}
    assert published == {"proxy"}
    assert {p["host_ip"] for p in services["proxy"]["ports"]} == {"127.0.0.1"}
    assert {p["target"] for p in services["proxy"]["ports"]} == {8080, 8443}


def test_settings_come_from_the_environment() -> None:
    config = resolved(
        {
            "YADML_SERVER_REPLICAS": "3",
            "YADML_CLIENTS": "5",
            "YADML_CLIENT_CPUS": "0.5",
            "YADML_CLIENT_MEMORY": "1g",
            "YADML_HTTP_PORT": "18080",
            "YADML_PROXY_IP": "172.30.98.10",
            "YADML_BACKEND_SUBNET": "172.30.98.0/24",
            "YADML_BACKEND_RANGE": "172.30.98.128/25",
            "YADML_VOLUNTEER_SUBNET": "172.30.97.0/24",
        }
    )
    services = config["services"]
    assert services["server"]["deploy"]["replicas"] == 3
    assert services["client"]["deploy"]["replicas"] == 5
    assert services["client"]["cpus"] == 0.5
    assert int(services["client"]["mem_limit"]) == 1 << 30
    assert any(p["published"] == "18080" for p in services["proxy"]["ports"])
    # The servers believe X-Forwarded-For from exactly the proxy's fixed address.
    proxy_ip = services["proxy"]["networks"]["backend"]["ipv4_address"]
    assert proxy_ip == "172.30.98.10"
    assert services["server"]["environment"]["YADML_TRUSTED_PROXY"] == proxy_ip
    assert config["networks"]["backend"]["ipam"]["config"][0]["subnet"] == "172.30.98.0/24"
    assert config["networks"]["volunteers"]["ipam"]["config"][0]["subnet"] == "172.30.97.0/24"


def test_every_service_is_locked_down(config: Any) -> None:
    for name, service in config["services"].items():
        assert service.get("read_only") is True, name
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert "privileged" not in service, name
    client = config["services"]["client"]
    assert client["cpus"] == 1
    assert int(client["mem_limit"]) == 2 << 30
    assert client["pids_limit"] == 256
    assert int(config["services"]["server"]["mem_limit"]) == 4 << 30


def test_start_order(config: Any) -> None:
    services = config["services"]

    def waits_for(name: str) -> dict[str, str]:
        return {dep: c["condition"] for dep, c in services[name].get("depends_on", {}).items()}

    assert waits_for("init") == {"postgres": "service_healthy"}
    assert waits_for("server") == {"init": "service_completed_successfully"}
    assert waits_for("proxy") == {"server": "service_healthy"}
    assert waits_for("client")["init"] == "service_completed_successfully"
    assert services["init"]["restart"] == "no"
    for name in ("postgres", "server", "proxy", "client"):
        assert services[name]["restart"] == "unless-stopped", name
    assert "healthcheck" in services["server"]
    assert "healthcheck" in services["postgres"]


def test_secrets_and_networks(config: Any) -> None:
    services = config["services"]
    # The database password is a secret file, never a value in the environment.
    for name in ("postgres", "init", "server"):
        assert [s["source"] for s in services[name]["secrets"]] == ["db_password"], name
    assert "secrets" not in services["client"]
    assert config["secrets"]["db_password"]["file"].endswith("secrets/db_password")
    assert "PASSWORD@@" in services["server"]["environment"]["YADML_DATABASE_URL"]
    # Volunteers reach the proxy only: not the servers, not the database.
    assert set(services["client"]["networks"]) == {"volunteers"}
    assert set(services["proxy"]["networks"]) == {"backend", "volunteers"}
    for name in ("postgres", "init", "server"):
        assert set(services[name]["networks"]) == {"backend"}, name
    # Clients see the public fingerprint volume, read-only, and not the server's state.
    client_volumes = {v.get("source"): v for v in services["client"]["volumes"]}
    assert client_volumes["public"]["read_only"] is True
    assert "state" not in client_volumes
