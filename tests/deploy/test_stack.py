"""deploy/compose.yaml for real: PostgreSQL, init, two server replicas, the nginx proxy and
two volunteer clients come up from the project's own images (`make deploy-images`); a small
`digits` job submitted through the proxy's operator API completes; `down -v` removes it all.

Bounded: about three minutes on two loaded cores (start ~1 min, job ~1 min)."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.conftest import compose, compose_available
from tests.requirements import require
from work_server.launch import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

IMAGES = ("yadml-server:local", "yadml-client:local", "yadml-postgres:local", "yadml-proxy:local")
JOB: dict[str, Any] = {
    "dataset": "digits",
    "shards": 2,
    "rounds": 2,
    "local_epochs": 1,
    "lr": 0.003,
    "batch_size": 32,
    "seed": 3,
}


def _free_subnets(count: int) -> list[ipaddress.IPv4Network]:
    """``count`` /24s in 172.30.100-199.0 that no Docker network on this host overlaps."""
    ids = subprocess.run(
        ["docker", "network", "ls", "-q"], capture_output=True, text=True, check=True
    ).stdout.split()
    used: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    if ids:
        out = subprocess.run(
            ["docker", "network", "inspect", "--format", "{{json .IPAM.Config}}", *ids],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for line in out.splitlines():
            used += [ipaddress.ip_network(c["Subnet"]) for c in json.loads(line) or [] if c]
    free: list[ipaddress.IPv4Network] = []
    for third in range(100 + os.getpid() % 90, 200):
        net = ipaddress.IPv4Network(f"172.30.{third}.0/24")
        if not any(net.overlaps(u) for u in used if u.version == 4):
            free.append(net)
        if len(free) == count:
            return free
    raise AssertionError("no free 172.30.x.0/24 for the test stack")


def _images_present() -> bool:
    proc = subprocess.run(["docker", "image", "inspect", *IMAGES], capture_output=True, check=False)
    return proc.returncode == 0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[dict[str, str], str, str]]:
    """(compose environment, proxy URL, operator token); the stack is removed after."""
    ok, reason = compose_available()
    require(ok, reason)
    require(_images_present(), "deploy images missing: make deploy-images")
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir(mode=0o700)
    password = secret_dir / "db_password"
    password.write_text(secrets.token_urlsafe(24) + "\n")
    password.chmod(0o644)  # a bind mount: the containers' own users read it
    (tmp_path / "tls").mkdir()
    net, volunteers = _free_subnets(2)
    token = secrets.token_urlsafe(32)
    http_port = free_port()
    env = {
        "COMPOSE_PROJECT_NAME": f"yadmltest{os.getpid()}",
        "YADML_DB_PASSWORD_FILE": str(password),
        "YADML_TLS_DIR": str(tmp_path / "tls"),
        "YADML_HTTP_PORT": str(http_port),
        "YADML_HTTPS_PORT": str(free_port()),
        "YADML_OPERATOR_TOKEN": token,
        "YADML_BACKEND_SUBNET": str(net),
        "YADML_BACKEND_RANGE": f"{net.network_address + 128}/25",
        "YADML_PROXY_IP": str(net.network_address + 10),
        "YADML_VOLUNTEER_SUBNET": str(volunteers),
        "YADML_SERVE_ARGS": "--interval-transitioner 0.5 --interval-validator 0.5 "
        "--interval-aggregator 0.5 --retry-after 0.5",
    }
    try:
        yield env, f"http://127.0.0.1:{http_port}", token
    finally:
        compose("down", "--volumes", "--remove-orphans", "--timeout", "10", env=env, timeout=180)


def _logs(env: dict[str, str]) -> str:
    return compose("logs", "--no-color", "--tail", "40", env=env, timeout=60).stdout[-12000:]


def _running(env: dict[str, str]) -> list[dict[str, Any]]:
    out = compose("ps", "--format", "json", env=env).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _replica_health(env: dict[str, str], index: int) -> dict[str, Any]:
    """GET /healthz of one server replica, from inside its container."""
    code = (
        "import urllib.request as u; "
        "print(u.urlopen('http://127.0.0.1:8080/healthz', timeout=5).read().decode())"
    )
    proc = compose("exec", "-T", "--index", str(index), "server", "python3", "-c", code, env=env)
    assert proc.returncode == 0, proc.stderr
    health: dict[str, Any] = json.loads(proc.stdout)
    return health


def test_stack_trains_a_digits_job(stack: tuple[dict[str, str], str, str]) -> None:
    env, url, token = stack
    up = compose("up", "--detach", "--quiet-pull", env=env, timeout=360)
    assert up.returncode == 0, f"{up.stderr}\n{_logs(env)}"

    containers = _running(env)
    by_service: dict[str, list[dict[str, Any]]] = {}
    for c in containers:
        by_service.setdefault(c["Service"], []).append(c)
    assert len(by_service["server"]) == 2, containers
    assert all(c["Health"] == "healthy" for c in by_service["server"]), containers
    assert len(by_service["client"]) == 2, containers
    assert by_service["postgres"][0]["Health"] == "healthy"

    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10.0) as http:
        assert http.get("/healthz").status_code == 200
        forged = http.post("/api/v1/jobs", json=JOB, headers={"Authorization": "Bearer x"})
        assert forged.status_code == 401
        r = http.post("/api/v1/jobs", json=JOB)
        assert r.status_code == 201, r.text
        job_id = int(r.json()["id"])
        deadline = time.monotonic() + 240
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = http.get(f"/api/v1/jobs/{job_id}").json()
            if job["state"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(1.0)
        assert job.get("state") == "completed", f"{job}\n{_logs(env)}"
        assert [m["round"] for m in job["rounds"]][-1] == JOB["rounds"]
        assert job["model_sha256"]
        status = http.get("/api/v1/status").json()
        assert status["hosts_total"] == 2, status

    # One replica runs the daemons (PostgreSQL advisory lock), the other stands by.
    roles = sorted(_replica_health(env, i)["daemons"] for i in (1, 2))
    assert roles == ["leader", "standby"], roles

    # Both clients pinned the key init published, checked against the fingerprint file.
    client_logs = compose("logs", "--no-color", "client", env=env).stdout
    assert client_logs.count("(matches --fingerprint)") == 2, client_logs[-4000:]
