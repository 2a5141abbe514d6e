"""Strict, bounded parsing of untrusted safetensors files (volunteer uploads).

The format is an 8-byte little-endian header length, a JSON header, then raw tensor
bytes. We parse the header ourselves with hard limits before any tensor is touched,
require the tensors to tile the data section exactly (no gaps, no overlaps, nothing
after), and only then let numpy view the bytes. Nothing here executes code from input.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_HEADER_BYTES = 1 << 20
MAX_TENSORS = 1024
MAX_NAME_LEN = 256
MAX_METADATA_ITEMS = 16
MAX_METADATA_VALUE = 64 * 1024
MAX_TENSOR_BYTES = 1 << 40  # far above any model we train, far below numpy's 2**63 limit

DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


class SafetensorsError(ValueError):
    """The bytes are not an acceptable safetensors file; the message says why."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class Header:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_offset: int  # where the data section starts in the file


def parse_header(data: bytes | memoryview) -> Header:
    if len(data) < 8:
        raise SafetensorsError("truncated: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", bytes(data[:8]))
    if n == 0 or n > MAX_HEADER_BYTES:
        raise SafetensorsError(f"header length {n} outside 1..{MAX_HEADER_BYTES}")
    if 8 + n > len(data):
        raise SafetensorsError("truncated: header runs past the end of the body")
    try:
        raw = json.loads(bytes(data[8 : 8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SafetensorsError(f"header is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise SafetensorsError("header is not a JSON object")
    metadata_raw = raw.pop("__metadata__", {})
    if not isinstance(metadata_raw, dict) or len(metadata_raw) > MAX_METADATA_ITEMS:
        raise SafetensorsError("__metadata__ must be an object of at most 16 strings")
    metadata: dict[str, str] = {}
    for k, v in metadata_raw.items():
        if not isinstance(v, str) or len(v) > MAX_METADATA_VALUE:
            raise SafetensorsError(f"__metadata__[{k!r}] must be a string of <= 64 KiB")
        metadata[k] = v
    if len(raw) > MAX_TENSORS:
        raise SafetensorsError(f"more than {MAX_TENSORS} tensors")
    tensors: dict[str, TensorInfo] = {}
    for name, spec in raw.items():
        if len(name) > MAX_NAME_LEN or not isinstance(spec, dict):
            raise SafetensorsError(f"bad tensor entry {name[:64]!r}")
        dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
        if dtype not in DTYPES:
            raise SafetensorsError(f"tensor {name!r}: unsupported dtype {dtype!r}")
        if (
            not isinstance(shape, list)
            or len(shape) > 8
            or not all(isinstance(d, int) and 0 <= d < 2**31 for d in shape)
        ):
            raise SafetensorsError(f"tensor {name!r}: bad shape")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and o >= 0 for o in offsets)
            or offsets[0] > offsets[1]
        ):
            raise SafetensorsError(f"tensor {name!r}: bad data_offsets")
        # Python ints: no int64 wrap-around ([2**16] * 4 -> 0). Zero dimensions are counted
        # as 1 in the size bound, or numpy could not even view an empty [0, 2**31, 2**31...].
        count = math.prod(shape)
        if math.prod(max(1, d) for d in shape) * DTYPES[dtype].itemsize > MAX_TENSOR_BYTES:
            raise SafetensorsError(f"tensor {name!r}: shape too large")
        if (offsets[1] - offsets[0]) != count * DTYPES[dtype].itemsize:
            raise SafetensorsError(f"tensor {name!r}: data_offsets do not match shape x dtype")
        tensors[name] = TensorInfo(dtype, tuple(shape), offsets[0], offsets[1])
    data_len = len(data) - 8 - n
    cursor = 0
    for info in sorted(tensors.values(), key=lambda t: (t.start, t.end)):
        if info.start != cursor:
            raise SafetensorsError("tensor data overlaps or leaves gaps")
        cursor = info.end
    if cursor != data_len:
        raise SafetensorsError(
            f"data section is {data_len} bytes but the tensors cover {cursor} (truncated or padded)"
        )
    return Header(tensors=tensors, metadata=metadata, data_offset=8 + n)


def tensor_array(data: bytes | memoryview, header: Header, name: str) -> np.ndarray[Any, Any]:
    info = header.tensors[name]
    buf = memoryview(data)[header.data_offset + info.start : header.data_offset + info.end]
    return np.frombuffer(buf, dtype=DTYPES[info.dtype]).reshape(info.shape)


def check_matches(header: Header, expected: dict[str, tuple[str, tuple[int, ...]]]) -> None:
    """Same tensor names, dtypes and shapes as ``expected`` (name -> (dtype, shape))."""
    missing = sorted(set(expected) - set(header.tensors))
    extra = sorted(set(header.tensors) - set(expected))
    if missing or extra:
        raise SafetensorsError(
            f"tensor names differ: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for name, (dtype, shape) in expected.items():
        got = header.tensors[name]
        if got.dtype != dtype:
            raise SafetensorsError(f"tensor {name!r}: dtype {got.dtype}, expected {dtype}")
        if got.shape != shape:
            raise SafetensorsError(
                f"tensor {name!r}: shape {list(got.shape)}, expected {list(shape)}"
            )


def check_finite(data: bytes | memoryview, header: Header) -> None:
    for name, info in header.tensors.items():
        if info.dtype.startswith("F") and not np.isfinite(tensor_array(data, header, name)).all():
            raise SafetensorsError(f"tensor {name!r} has NaN or infinite values")


def spec_of(header: Header) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {name: (t.dtype, t.shape) for name, t in header.tensors.items()}
