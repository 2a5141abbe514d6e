"""Docker executor tests run a real engine and the real worker image (`make image`).

Locally they skip when either is missing; under ``CI=true`` they fail instead
(:func:`tests.requirements.require`).
"""

from __future__ import annotations

import gc
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import safetensors.torch
import torch

from tests.requirements import require
from volunteer_client.executors.base import ExecutionRequest
from volunteer_client.executors.worker_image import default_image
from yadml_common.wire import SHARD_IMAGES, SHARD_LABELS, TaskConfig
from yadml_trainer.models import build_model


def _engine_state() -> tuple[bool, str]:
    import docker
    import docker.errors

    # Without an engine, docker.from_env() leaks the socket it tried: collect it here, where
    # its ResourceWarning is expected, rather than in whichever test runs the collector next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env()
            client.ping()
        except Exception as exc:
            reason = f"no Docker engine ({exc}); run `make docker-engine`"
        else:
            reason = ""
        gc.collect()
    if reason:
        return False, reason
    try:
        client.images.get(default_image())
    except docker.errors.ImageNotFound:
        return False, f"worker image {default_image()} is missing; run `make image`"
    finally:
        client.close()
    return True, ""


@pytest.fixture(scope="session")
def docker_engine() -> None:
    ok, reason = _engine_state()
    require(ok, reason)


@pytest.fixture
def client_id(docker_engine: None) -> Iterator[str]:
    """A fresh ``yadml.client`` label; the test fails if its containers outlive it."""
    import docker

    value = f"test-{uuid.uuid4().hex[:12]}"
    yield value
    client = docker.from_env()
    try:
        left = client.containers.list(all=True, filters={"label": f"yadml.client={value}"})
        for container in left:
            container.remove(force=True)
        assert not left, f"containers left behind: {[c.name for c in left]}"
    finally:
        client.close()


def make_request(
    root: Path,
    *,
    samples: int = 512,
    seed: int = 7,
    timeout_s: float | None = 120.0,
    name: str = "1",
) -> ExecutionRequest:
    """A unit's files under ``root/<name>`` (as the daemon lays them out) and its request."""
    work = root / name
    inputs = work / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (samples, 28, 28), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (samples,), dtype=torch.int64, generator=gen)
    shard = inputs / "shard"
    safetensors.torch.save_file({SHARD_IMAGES: images, SHARD_LABELS: labels}, str(shard))
    torch.manual_seed(seed)
    model = build_model("lenet")
    weights = inputs / "weights"
    safetensors.torch.save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(weights)
    )
    return ExecutionRequest(
        work_dir=work,
        shard_path=shard,
        weights_path=weights,
        task=TaskConfig(model="lenet", seed=seed, batch_size=32),
        output_path=work / "output.safetensors",
        timeout_s=timeout_s,
        threads=1,
        progress_path=work / "progress",
    )
