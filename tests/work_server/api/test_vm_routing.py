"""VM units: offered only to hosts that declared the vm runtime, naming the VM image by the
sha256 of its manifest (``--vm-image``), inside the signed manifest of the unit."""

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
from yadml_common.signing import SignatureError, WorkVerifier
from yadml_common.wire import WorkUnitAssignment

VM_IMAGE = "yadml-vm@sha256:" + "cd" * 32
WORKER_IMAGE = "sha256:" + "ab" * 32


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(
        state_dir=tmp_path / "var",
        runs_dir=tmp_path / "runs",
        operator_token=OPERATOR,
        run_daemons=False,
        worker_image=WORKER_IMAGE,
        vm_image=VM_IMAGE,
    )


async def _register(client: Client, name: str, runtimes: list[str]) -> str:
    r = await client.post(
        "/api/v1/hosts",
        json={"name": name, "cpus": 2, "memory_mb": 2048, "runtimes": runtimes},
    )
    assert r.status == 201, await r.text()
    token: str = (await r.json())["host_token"]
    return token


async def test_vm_units_go_only_to_vm_hosts_and_name_the_vm_image(client: Client) -> None:
    _, process_token = await register(client, "p")
    docker_token = await _register(client, "d", ["process", "docker"])
    vm_token = await _register(client, "v", ["process", "vm"])
    await start_digits_job(client, shards=1, runtimes=["vm"])
    for token in (process_token, docker_token):
        r = await client.post("/api/v1/work", json={"max_units": 1}, headers=bearer(token))
        assert r.status == 200
        assert (await r.json())["units"] == []
    unit = await fetch_unit(client, vm_token)
    assert unit.raw["runtime"] == "vm"
    assert unit.raw["image"] == VM_IMAGE


async def test_the_vm_image_is_covered_by_the_signature(client: Client) -> None:
    vm_token = await _register(client, "v", ["vm"])
    await start_digits_job(client, shards=1, runtimes=["vm"])
    unit = await fetch_unit(client, vm_token)
    r = await client.get("/api/v1/project")
    keys = [k["public_key"] for k in (await r.json())["public_keys"] if k["current"]]
    verifier = WorkVerifier.from_b64(keys)
    signed = WorkUnitAssignment.model_validate(unit.raw)
    verifier.verify(signed)
    tampered = signed.model_copy(update={"image": "yadml-vm@sha256:" + "ee" * 32})
    with pytest.raises(SignatureError, match="does not match"):
        verifier.verify(tampered)


@pytest.mark.parametrize("image", ["yadml-vm:latest", "sha256:abc", "VM@sha256:" + "0" * 64])
def test_vm_image_must_be_a_digest(image: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert server_main(["serve", "--vm-image", image]) == 2
    assert "--vm-image" in capsys.readouterr().err
