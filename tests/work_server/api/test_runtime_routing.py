"""Docker and VM units: offered only to hosts that declared that runtime, naming the image the
server was started with (``--worker-image``, ``--vm-image``), inside the signed manifest."""

from __future__ import annotations

from dataclasses import dataclass
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

WORKER_IMAGE = "sha256:" + "ab" * 32
VM_IMAGE = "yadml-vm@sha256:" + "cd" * 32


@dataclass(frozen=True)
class Route:
    runtime: str
    #: what the server names in the unit's ``image``
    image: str
    #: the ``serve`` option that sets it
    flag: str
    #: values that option refuses
    bad_images: tuple[str, ...]


ROUTES = [
    Route(
        "docker",
        WORKER_IMAGE,
        "--worker-image",
        ("yadml-worker:latest", "sha256:abc", "Name@sha256:" + "0" * 64),
    ),
    Route("vm", VM_IMAGE, "--vm-image", ("yadml-vm:latest", "sha256:abc", "VM@sha256:" + "0" * 64)),
]
ROUTE = pytest.mark.parametrize("route", ROUTES, ids=[r.runtime for r in ROUTES])


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


@ROUTE
async def test_units_go_only_to_hosts_of_their_runtime(client: Client, route: Route) -> None:
    _, process_token = await register(client, "p")
    others = [rt for rt in ("docker", "vm") if rt != route.runtime]
    other_tokens = [await _register(client, f"o-{rt}", ["process", rt]) for rt in others]
    token = await _register(client, "r", ["process", route.runtime])
    await start_digits_job(client, shards=1, runtimes=[route.runtime])
    for other in (process_token, *other_tokens):
        r = await client.post("/api/v1/work", json={"max_units": 1}, headers=bearer(other))
        assert r.status == 200
        assert (await r.json())["units"] == []
    unit = await fetch_unit(client, token)
    assert unit.raw["runtime"] == route.runtime
    assert unit.raw["image"] == route.image


@ROUTE
async def test_process_units_name_no_image(client: Client, route: Route) -> None:
    token = await _register(client, "r", ["process", route.runtime])
    await start_digits_job(client, shards=1)  # runtimes default to process
    unit = await fetch_unit(client, token)
    assert unit.raw["runtime"] == "process"
    assert unit.raw.get("image") is None


@ROUTE
async def test_the_image_is_covered_by_the_signature(client: Client, route: Route) -> None:
    token = await _register(client, "r", [route.runtime])
    await start_digits_job(client, shards=1, runtimes=[route.runtime])
    unit = await fetch_unit(client, token)
    r = await client.get("/api/v1/project")
    keys = [k["public_key"] for k in (await r.json())["public_keys"] if k["current"]]
    verifier = WorkVerifier.from_b64(keys)
    signed = WorkUnitAssignment.model_validate(unit.raw)
    verifier.verify(signed)
    other = route.image.replace(route.image[-64:], "ee" * 32)
    tampered = signed.model_copy(update={"image": other})
    with pytest.raises(SignatureError, match="does not match"):
        verifier.verify(tampered)


@pytest.mark.parametrize(
    ("flag", "image"),
    [(r.flag, bad) for r in ROUTES for bad in r.bad_images],
)
def test_the_image_must_be_a_digest(
    flag: str, image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert server_main(["serve", flag, image]) == 2
    assert flag in capsys.readouterr().err
