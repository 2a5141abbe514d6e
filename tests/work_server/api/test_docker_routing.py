"""Docker units: offered only to hosts that declared the docker runtime, naming the image."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.work_server.api.conftest import (
    OPERATOR,
    Client,
    bearer,
    fetch_unit,
    register,
    start_digits_job,
)
from work_server.cli import main as server_main
from work_server.config import ServerConfig

IMAGE = "sha256:" + "ab" * 32


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(
        state_dir=tmp_path / "var",
        runs_dir=tmp_path / "runs",
        operator_token=OPERATOR,
        run_daemons=False,
        worker_image=IMAGE,
    )


async def _register_docker(client: Client) -> str:
    r = await client.post(
        "/api/v1/hosts",
        json={"name": "d", "cpus": 2, "memory_mb": 2048, "runtimes": ["process", "docker"]},
    )
    assert r.status == 201, await r.text()
    token: str = (await r.json())["host_token"]
    return token


async def test_docker_units_go_only_to_docker_hosts(client: Client) -> None:
    _, process_token = await register(client, "p")
    docker_token = await _register_docker(client)
    await start_digits_job(client, shards=1, runtimes=["docker"])
    r = await client.post("/api/v1/work", json={"max_units": 1}, headers=bearer(process_token))
    assert r.status == 200
    assert (await r.json())["units"] == []
    unit = await fetch_unit(client, docker_token)
    assert unit.raw["runtime"] == "docker"
    assert unit.raw["image"] == IMAGE


async def test_process_units_name_no_image(client: Client) -> None:
    docker_token = await _register_docker(client)
    await start_digits_job(client, shards=1)  # runtimes default to process
    unit = await fetch_unit(client, docker_token)
    assert unit.raw["runtime"] == "process"
    assert unit.raw.get("image") is None


@pytest.mark.parametrize("image", ["yadml-worker:latest", "sha256:abc", "Name@sha256:" + "0" * 64])
def test_worker_image_must_be_a_digest(image: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert server_main(["serve", "--worker-image", image]) == 2
    assert "--worker-image" in capsys.readouterr().err
