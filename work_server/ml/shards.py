"""(De)serialisation of the blobs that travel to volunteers: shards and weights (safetensors).

* Shard: ``images`` uint8 ``[N, 28, 28]`` and ``labels`` int64 ``[N]`` (names from
  :mod:`yadml_common.wire`), ``N >= 1``.
* Weights: a state dict of tensors, optionally with string metadata (e.g. the trainer's
  ``report``).

Every decoder raises ``ValueError`` on malformed input, never another exception type.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping

import numpy as np
import safetensors.numpy
import safetensors.torch
import torch
from safetensors.torch import load as load_safetensors

from yadml_common.wire import SHARD_IMAGES, SHARD_LABELS

__all__ = [
    "decode_shard",
    "decode_weights",
    "encode_shard",
    "encode_weights",
    "read_metadata",
    "validate_shard_arrays",
]

#: Upper bound for a safetensors JSON header (the format itself caps it at 100 MB).
_MAX_HEADER = 100_000_000


def validate_shard_arrays(images: np.ndarray, labels: np.ndarray) -> None:
    """Raise ``ValueError`` unless images are uint8 [N, 28, 28] and labels int64 [N], N >= 1."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"shard images must be uint8 [N, 28, 28], got {images.dtype} {list(images.shape)}"
        )
    if labels.dtype != np.int64 or labels.ndim != 1:
        raise ValueError(f"shard labels must be int64 [N], got {labels.dtype} {list(labels.shape)}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"shard has {images.shape[0]} images but {labels.shape[0]} labels")
    if images.shape[0] == 0:
        raise ValueError("shard is empty")


def encode_shard(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Serialise a shard. Integer labels of any width are converted to int64."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if np.issubdtype(labels.dtype, np.integer):
        labels = labels.astype(np.int64, copy=False)
    validate_shard_arrays(images, labels)
    tensors = {
        SHARD_IMAGES: np.ascontiguousarray(images),
        SHARD_LABELS: np.ascontiguousarray(labels),
    }
    return bytes(safetensors.numpy.save(tensors))


def decode_shard(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Parse and validate a shard blob -> (images uint8 [N, 28, 28], labels int64 [N])."""
    try:
        tensors = safetensors.numpy.load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"not a safetensors shard: {exc}") from None
    expected = {SHARD_IMAGES, SHARD_LABELS}
    if set(tensors) != expected:
        raise ValueError(f"shard must hold exactly {sorted(expected)}, got {sorted(tensors)}")
    images, labels = tensors[SHARD_IMAGES], tensors[SHARD_LABELS]
    validate_shard_arrays(images, labels)
    return images, labels


def encode_weights(
    state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> bytes:
    """Serialise a state dict (tensors are detached, made contiguous and moved to CPU)."""
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in state.items()}
    return bytes(safetensors.torch.save(tensors, metadata=dict(metadata) if metadata else None))


def decode_weights(data: bytes) -> dict[str, torch.Tensor]:
    """Parse a weights blob into a state dict (metadata ignored; see :func:`read_metadata`)."""
    try:
        return dict(load_safetensors(data))  # safetensors: no code execution
    except Exception as exc:
        raise ValueError(f"not a safetensors weights file: {exc}") from None


def read_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` string map of a safetensors blob ({} when there is none)."""
    if len(data) < 8:
        raise ValueError("not a safetensors file: shorter than its header length")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(_MAX_HEADER, len(data) - 8):
        raise ValueError("not a safetensors file: bad header length")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a safetensors file: bad header: {exc}") from None
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file: header is not an object")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise ValueError("safetensors __metadata__ must map strings to strings")
    return dict(meta)
