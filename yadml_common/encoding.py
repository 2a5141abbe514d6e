"""Compressed result uploads: a trained state dict sent as its delta from the input weights.

A job's ``update_encoding`` (:class:`yadml_common.wire.TaskConfig`) says how the trainer
writes its output; the server checks the encoded layout strictly and decodes it back to
float32 weights before anything else looks at them. Pure numpy, shared by both sides.

* ``fp32``: the trained weights themselves (no delta). 4 bytes per parameter.
* ``fp16``: every float32 tensor ``name`` is sent as ``new - base`` cast to float16
  (same name and shape). 2 bytes per parameter.
* ``int8``: every float32 tensor ``name`` becomes int8 ``q`` (same name and shape) plus a
  float32 tensor ``name#scale``: one scale per output channel (the first dimension) for
  tensors of 2+ dimensions, shape ``[]`` otherwise. ``delta = q * scale`` (broadcast over
  the first dimension); ``scale = max|delta| / 127`` per channel, ``q`` rounded to nearest.
  1 byte per parameter, plus 4 per channel.

Non-float32 tensors (none in LeNet) travel unchanged in every encoding. Decoding is
``base + delta`` in float32, so two hosts that send the same encoded bytes give the same
weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

import numpy as np

from yadml_common.wire import UpdateEncoding

__all__ = [
    "ENCODINGS",
    "SCALE_SUFFIX",
    "EncodingError",
    "Layout",
    "UpdateEncoding",
    "decode_update",
    "encode_update",
    "encoded_layout",
]

ENCODINGS: tuple[UpdateEncoding, ...] = get_args(UpdateEncoding)

#: Suffix of the int8 scale tensor of ``name`` (``#`` is never part of a torch state-dict name).
SCALE_SUFFIX = "#scale"
INT8_MAX = 127

Array = np.ndarray[Any, Any]
#: tensor name -> (safetensors dtype, shape)
Layout = dict[str, tuple[str, tuple[int, ...]]]


class EncodingError(ValueError):
    """An encoded update does not fit its encoding or its base weights; the message says why."""


def _is_f32(a: Array) -> bool:
    return bool(a.dtype == np.dtype("<f4"))


def _scale_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0],) if len(shape) >= 2 else ()


def encoded_layout(base: Layout, encoding: UpdateEncoding) -> Layout:
    """The exact tensor layout an update of weights laid out as ``base`` has in ``encoding``."""
    if encoding == "fp32":
        return dict(base)
    out: Layout = {}
    for name, (dtype, shape) in base.items():
        if dtype != "F32":
            out[name] = (dtype, shape)
        elif encoding == "fp16":
            out[name] = ("F16", shape)
        else:
            out[name] = ("I8", shape)
            out[name + SCALE_SUFFIX] = ("F32", _scale_shape(shape))
    return out


def _quantize(delta: Array) -> tuple[Array, Array]:
    d = delta.astype(np.float64)
    if d.ndim >= 2:
        peak = np.abs(d.reshape(d.shape[0], -1)).max(axis=1, initial=0.0)
        scale = (peak / INT8_MAX).astype(np.float32)
        div = scale.astype(np.float64).reshape((-1,) + (1,) * (d.ndim - 1))
    else:
        peak = np.abs(d).max(initial=0.0)
        scale = np.asarray(peak / INT8_MAX, dtype=np.float32)
        div = scale.astype(np.float64)
    safe = np.where(div > 0, div, 1.0)
    q = np.clip(np.rint(d / safe), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, scale


def encode_update(
    new: Mapping[str, Array], base: Mapping[str, Array], encoding: UpdateEncoding
) -> dict[str, Array]:
    """The tensors to upload for trained weights ``new`` that started from ``base``.

    Raises :class:`EncodingError` if the names or shapes differ, or a float16 delta overflows.
    """
    if set(new) != set(base):
        raise EncodingError("trained and input weights have different tensor names")
    if encoding == "fp32":
        return {k: np.ascontiguousarray(v) for k, v in new.items()}
    out: dict[str, Array] = {}
    for name, value in new.items():
        ref = base[name]
        if value.shape != ref.shape or value.dtype != ref.dtype:
            raise EncodingError(f"{name}: trained and input tensors differ in shape or dtype")
        if not _is_f32(value):
            out[name] = np.ascontiguousarray(value)
            continue
        delta = value.astype(np.float32) - ref.astype(np.float32)
        if encoding == "fp16":
            with np.errstate(over="ignore"):  # overflow becomes inf, refused just below
                half = delta.astype(np.float16)
            if not np.isfinite(half).all():
                raise EncodingError(f"{name}: the update does not fit float16")
            out[name] = half
        elif encoding == "int8":
            out[name], out[name + SCALE_SUFFIX] = _quantize(delta)
        else:
            raise EncodingError(f"unknown update encoding {encoding!r}")
    return out


_DTYPE_NAMES = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("i1"): "I8"}


def _dtype_name(a: Array) -> str:
    """safetensors' name for the three dtypes an encoding uses, numpy's for the rest."""
    return _DTYPE_NAMES.get(a.dtype, str(a.dtype))


def _check_layout(encoded: Mapping[str, Array], expected: Layout) -> None:
    if set(encoded) != set(expected):
        missing = sorted(set(expected) - set(encoded))[:5]
        extra = sorted(set(encoded) - set(expected))[:5]
        raise EncodingError(f"tensor names differ: missing {missing}, unexpected {extra}")
    for name, (dtype, shape) in expected.items():
        got = encoded[name]
        if _dtype_name(got) != dtype or tuple(got.shape) != shape:
            raise EncodingError(
                f"{name}: {_dtype_name(got)} {list(got.shape)}, expected {dtype} {list(shape)}"
            )


def decode_update(
    encoded: Mapping[str, Array], base: Mapping[str, Array], encoding: UpdateEncoding
) -> dict[str, Array]:
    """The float32 weights an encoded update stands for (``base + delta``).

    Strict: the layout must be exactly :func:`encoded_layout` of ``base``, scales finite and
    ``>= 0``, float16 deltas finite; else :class:`EncodingError`.
    """
    layout = {name: (_dtype_name(ref), tuple(ref.shape)) for name, ref in base.items()}
    expected = encoded_layout(layout, encoding)
    _check_layout(encoded, expected)
    if encoding == "fp32":
        return {k: np.asarray(v) for k, v in encoded.items()}
    out: dict[str, Array] = {}
    for name, ref in base.items():
        value = encoded[name]
        if not _is_f32(ref):
            out[name] = np.asarray(value)
            continue
        if encoding == "fp16":
            if not np.isfinite(value).all():
                raise EncodingError(f"{name}: non-finite float16 delta")
            delta = value.astype(np.float32)
        else:
            scale = np.asarray(encoded[name + SCALE_SUFFIX], dtype=np.float32)
            if not (np.isfinite(scale).all() and (scale >= 0).all()):
                raise EncodingError(f"{name}{SCALE_SUFFIX}: scales must be finite and >= 0")
            shape = (-1,) + (1,) * (value.ndim - 1) if scale.ndim else ()
            delta = value.astype(np.float32) * scale.reshape(shape)
        out[name] = ref.astype(np.float32) + delta
    return out
