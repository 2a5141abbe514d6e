"""Server-side decoding of result blobs: one function for every reader, float32 out."""

from __future__ import annotations

import pytest
import safetensors.numpy
import safetensors.torch
import torch

from work_server.ml.updates import decode_result, expected_upload_layout, task_encoding
from yadml_common.encoding import SCALE_SUFFIX, encode_update
from yadml_common.wire import UpdateEncoding
from yadml_trainer.models import initial_state


def test_task_encoding_defaults_to_fp32_for_old_tasks() -> None:
    assert task_encoding({"model": "lenet"}) == "fp32"
    assert task_encoding({"update_encoding": "int8"}) == "int8"
    with pytest.raises(ValueError, match="unknown update encoding"):
        task_encoding({"update_encoding": "zip"})


def test_expected_layout_follows_the_task() -> None:
    weights = {"w": ("F32", (4, 3)), "b": ("F32", (4,))}
    assert expected_upload_layout(weights, {}) == weights
    assert expected_upload_layout(weights, {"update_encoding": "int8"}) == {
        "w": ("I8", (4, 3)),
        "w" + SCALE_SUFFIX: ("F32", (4,)),
        "b": ("I8", (4,)),
        "b" + SCALE_SUFFIX: ("F32", ()),
    }


@pytest.mark.parametrize("encoding", ["fp32", "fp16", "int8"])
def test_decode_result_gives_float32_weights(encoding: UpdateEncoding) -> None:
    base = initial_state("lenet", 0)
    new = {k: v + 0.01 for k, v in base.items()}
    enc = encode_update(
        {k: v.numpy() for k, v in new.items()},
        {k: v.numpy() for k, v in base.items()},
        encoding,
    )
    decoded = decode_result(safetensors.numpy.save(enc), base, encoding)
    assert decoded.keys() == new.keys()
    for name, t in decoded.items():
        assert t.dtype == torch.float32
        assert torch.allclose(t, new[name], atol=1e-4), name


def test_decode_result_refuses_what_does_not_fit() -> None:
    base = initial_state("lenet", 0)
    with pytest.raises(ValueError, match="safetensors"):
        decode_result(b"not a safetensors file", base, "int8")
    plain = safetensors.torch.save(base)  # fp32 weights where int8 deltas are expected
    with pytest.raises(ValueError, match="tensor names differ"):
        decode_result(plain, base, "int8")
