"""Result blobs in a job's update encoding (``yadml_common.encoding``), server side.

The upload handler checks the encoded layout strictly (:func:`expected_upload_layout`,
:func:`check_scales`) before anything is stored; the blob store keeps the bytes as they
came (the smaller form). Every reader of a result blob (the validator, the round closer) goes
through :func:`decode_result`, which gives float32 weights whatever the encoding, so
screening, replica agreement and merging never see an encoded update.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import safetensors.numpy
import torch

from work_server.ml.shards import decode_weights
from work_server.services import safetensors_check as st
from yadml_common.encoding import (
    ENCODINGS,
    SCALE_SUFFIX,
    Layout,
    decode_update,
    encoded_layout,
)
from yadml_common.wire import UpdateEncoding

__all__ = ["check_scales", "decode_result", "expected_upload_layout", "task_encoding"]

Weights = dict[str, torch.Tensor]


def task_encoding(task: Mapping[str, Any]) -> UpdateEncoding:
    """A work unit's update encoding (``fp32`` for tasks stored before the option existed)."""
    value = task.get("update_encoding", "fp32")
    for known in ENCODINGS:
        if value == known:
            return known
    raise ValueError(f"unknown update encoding {value!r}")


def expected_upload_layout(weights_layout: Layout, task: Mapping[str, Any]) -> Layout:
    """The exact tensors (name -> (dtype, shape)) a result of this work unit must hold."""
    return encoded_layout(weights_layout, task_encoding(task))


def check_scales(data: bytes | memoryview, header: st.Header) -> None:
    """int8 scales must be ``>= 0`` (finiteness is :func:`st.check_finite`'s job)."""
    for name, info in header.tensors.items():
        scale = name.endswith(SCALE_SUFFIX) and info.dtype == "F32"
        if scale and (st.tensor_array(data, header, name) < 0).any():
            raise st.SafetensorsError(f"tensor {name!r}: int8 scales must be >= 0")


def decode_result(
    data: bytes, base: Mapping[str, torch.Tensor], encoding: UpdateEncoding
) -> Weights:
    """The float32 weights a result blob stands for; ``base`` is its work unit's input
    weights. Raises ``ValueError`` if the blob does not fit the encoding or ``base``."""
    if encoding == "fp32":
        return decode_weights(data)
    try:
        encoded = safetensors.numpy.load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"not a safetensors file: {exc}") from None
    decoded = decode_update(encoded, {k: v.numpy() for k, v in base.items()}, encoding)
    return {k: torch.from_numpy(v) for k, v in decoded.items()}
