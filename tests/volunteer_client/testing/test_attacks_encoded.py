"""An attacking volunteer in a job with compressed uploads attacks the weights its update
stands for and uploads the result in the job's encoding (so the attack reaches the merge
instead of being refused for its layout)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import safetensors.numpy
import safetensors.torch
import torch

from volunteer_client.executors.base import ExecutionRequest, ExecutionResult, Executor
from volunteer_client.testing.faults import AttackSpec, FaultyExecutor
from yadml_common.encoding import SCALE_SUFFIX, decode_update
from yadml_common.wire import TaskConfig
from yadml_trainer.trainer import encode_output

W0 = {"w": torch.linspace(-1, 1, 12).reshape(3, 4), "b": torch.zeros(3)}


class Int8Trainer(Executor):
    """'Trains' by adding 0.25 to every weight and uploads an int8 delta, like the trainer."""

    async def run(self, request: ExecutionRequest) -> ExecutionResult:
        w = safetensors.torch.load_file(str(request.weights_path))
        out = encode_output({k: v + 0.25 for k, v in w.items()}, w, request.task.update_encoding)
        report = json.dumps({"train_loss": 0.1, "samples": 2, "elapsed_s": 0.0, "epochs": 1})
        safetensors.torch.save_file(out, str(request.output_path), metadata={"report": report})
        return ExecutionResult(output_path=request.output_path, elapsed_s=0.0)


async def test_scale_attack_on_an_int8_job_uploads_int8(tmp_path: Path) -> None:
    weights = tmp_path / "w.safetensors"
    safetensors.torch.save_file(W0, str(weights))
    req = ExecutionRequest(
        work_dir=tmp_path,
        shard_path=tmp_path / "unused.safetensors",
        weights_path=weights,
        task=TaskConfig(update_encoding="int8"),
        output_path=tmp_path / "out.safetensors",
    )
    await FaultyExecutor(Int8Trainer(), attack=AttackSpec("scale", 4.0), seed=0).run(req)
    uploaded = safetensors.numpy.load_file(str(req.output_path))
    assert uploaded["w"].dtype == np.int8
    assert uploaded["w" + SCALE_SUFFIX].shape == (3,)
    base = {k: v.numpy() for k, v in W0.items()}
    decoded = decode_update(uploaded, base, "int8")
    for name, b in base.items():  # w0 + 4 d, d = 0.25
        assert np.allclose(decoded[name], b + 1.0, atol=1e-6), name
