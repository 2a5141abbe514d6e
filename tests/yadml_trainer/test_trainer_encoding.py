"""The trainer writes its output in the task's update encoding: the same training, sent as a
float16 or int8 delta that decodes (on the server) to the fp32 output within its error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch

from work_server.ml.datasets import load_dataset
from yadml_common.encoding import SCALE_SUFFIX, decode_update
from yadml_common.wire import TaskConfig, UpdateEncoding
from yadml_trainer.models import initial_state
from yadml_trainer.trainer import train

TASK = TaskConfig(dataset="digits", local_epochs=1, batch_size=32, seed=3)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    ds = load_dataset("digits")
    shard, weights = tmp_path / "shard.safetensors", tmp_path / "weights.safetensors"
    safetensors.numpy.save_file(
        {"images": ds.train_images[:150].copy(), "labels": ds.train_labels[:150].copy()},
        str(shard),
    )
    safetensors.torch.save_file(initial_state("lenet", 0), str(weights))
    return shard, weights


def _run(inputs: tuple[Path, Path], tmp_path: Path, encoding: UpdateEncoding) -> Path:
    out = tmp_path / f"out-{encoding}.safetensors"
    train(
        shard_path=inputs[0],
        weights_path=inputs[1],
        task=TASK.model_copy(update={"update_encoding": encoding}),
        output_path=out,
        threads=1,
    )
    return out


def test_encoded_outputs_decode_to_the_fp32_output(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    base = safetensors.numpy.load_file(str(inputs[1]))
    plain_path = _run(inputs, tmp_path, "fp32")
    plain = safetensors.numpy.load_file(str(plain_path))
    sizes = {"fp32": plain_path.stat().st_size}
    for encoding in ("fp16", "int8"):
        path = _run(inputs, tmp_path, encoding)
        sizes[encoding] = path.stat().st_size
        encoded = safetensors.numpy.load_file(str(path))
        if encoding == "int8":
            assert encoded["fc1.weight"].dtype == np.int8
            assert encoded["fc1.weight" + SCALE_SUFFIX].shape == (84,)
        else:
            assert encoded["fc1.weight"].dtype == np.float16
        decoded = decode_update(encoded, base, encoding)
        for name, want in plain.items():
            delta = np.abs(want - base[name]).max()
            bound = delta / 127 / 2 if encoding == "int8" else delta * 2**-11
            assert np.abs(decoded[name] - want).max() <= bound + 1e-6, (encoding, name)
    assert sizes["fp16"] < 0.55 * sizes["fp32"]
    assert sizes["int8"] < 0.3 * sizes["fp32"]
