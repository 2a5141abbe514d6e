"""Update encodings: exact round trip for fp32, bounded error for fp16 and int8, and strict
refusal of anything that does not fit the encoding or the base weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from yadml_common.encoding import (
    ENCODINGS,
    SCALE_SUFFIX,
    EncodingError,
    decode_update,
    encode_update,
    encoded_layout,
)
from yadml_common.wire import UpdateEncoding
from yadml_trainer.models import initial_state

Arrays = dict[str, np.ndarray[Any, Any]]


def lenet_pair(seed: int = 0, spread: float = 0.05) -> tuple[Arrays, Arrays]:
    """LeNet's initial weights and a 'trained' version (Gaussian deltas)."""
    base = {k: v.numpy() for k, v in initial_state("lenet", seed).items()}
    rng = np.random.default_rng(seed)
    new = {k: (v + rng.normal(0, spread, v.shape)).astype(np.float32) for k, v in base.items()}
    return base, new


def layout(arrays: Arrays) -> dict[str, tuple[str, tuple[int, ...]]]:
    names = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("i1"): "I8"}
    return {k: (names[v.dtype], tuple(v.shape)) for k, v in arrays.items()}


def test_fp32_is_the_weights_themselves() -> None:
    base, new = lenet_pair()
    enc = encode_update(new, base, "fp32")
    assert all(np.array_equal(enc[k], new[k]) for k in new)
    dec = decode_update(enc, base, "fp32")
    assert all(np.array_equal(dec[k], new[k]) for k in new)


def test_fp16_error_is_relative_to_the_delta() -> None:
    base, new = lenet_pair()
    enc = encode_update(new, base, "fp16")
    assert layout(enc) == encoded_layout(layout(base), "fp16")
    dec = decode_update(enc, base, "fp16")
    for k in new:
        assert dec[k].dtype == np.float32
        delta = np.abs(new[k] - base[k])
        # float16 keeps 11 significant bits: error <= |delta| * 2**-11 (+ float32 rounding)
        assert (np.abs(dec[k] - new[k]) <= delta * 2**-11 + 1e-6).all(), k


def test_int8_error_is_half_a_step_per_channel() -> None:
    base, new = lenet_pair()
    enc = encode_update(new, base, "int8")
    assert layout(enc) == encoded_layout(layout(base), "int8")
    assert enc["conv1.weight" + SCALE_SUFFIX].shape == (6,)  # one per output channel
    assert enc["conv1.bias" + SCALE_SUFFIX].shape == ()
    dec = decode_update(enc, base, "int8")
    for k in new:
        d = (new[k] - base[k]).reshape(new[k].shape[0], -1) if new[k].ndim >= 2 else None
        step = (
            np.abs(d).max(axis=1).reshape((-1,) + (1,) * (new[k].ndim - 1)) / 127
            if d is not None
            else np.abs(new[k] - base[k]).max() / 127
        )
        assert (np.abs(dec[k] - new[k]) <= step / 2 + 1e-6).all(), k
        assert np.abs(enc[k]).max() == 127  # the full range is used


def test_bytes_per_parameter() -> None:
    base, new = lenet_pair()
    params = sum(v.size for v in base.values())
    sizes = {e: sum(a.nbytes for a in encode_update(new, base, e).values()) for e in ENCODINGS}
    assert sizes["fp32"] == 4 * params
    assert sizes["fp16"] == 2 * params
    assert params < sizes["int8"] < 1.02 * params


def test_a_zero_update_decodes_to_the_base_exactly() -> None:
    base, _ = lenet_pair()
    for encoding in ENCODINGS:
        dec = decode_update(encode_update(base, base, encoding), base, encoding)
        assert all(np.array_equal(dec[k], base[k]) for k in base), encoding


def test_fp16_overflow_is_refused_when_encoding() -> None:
    base, new = lenet_pair()
    new["fc2.bias"] = new["fc2.bias"] + np.float32(1e6)
    with pytest.raises(EncodingError, match="float16"):
        encode_update(new, base, "fp16")


def _mutations() -> dict[str, tuple[UpdateEncoding, Any]]:
    s = "conv1.weight" + SCALE_SUFFIX
    return {
        "missing scale": ("int8", lambda t: t.pop(s)),
        "extra tensor": ("int8", lambda t: t.__setitem__("backdoor", np.zeros(3, np.int8))),
        "scale shape": ("int8", lambda t: t.__setitem__(s, np.ones((), np.float32))),
        "scale dtype": ("int8", lambda t: t.__setitem__(s, np.ones(6, np.float64))),
        "negative scale": ("int8", lambda t: t.__setitem__(s, -np.ones(6, np.float32))),
        "nan scale": ("int8", lambda t: t.__setitem__(s, np.full(6, np.nan, np.float32))),
        "values dtype": ("int8", lambda t: t.__setitem__("fc2.bias", np.zeros(10, np.int16))),
        "values shape": ("int8", lambda t: t.__setitem__("fc2.bias", np.zeros(11, np.int8))),
        "fp32 in fp16": ("fp16", lambda t: t.__setitem__("fc2.bias", np.zeros(10, np.float32))),
        "inf in fp16": ("fp16", lambda t: t["fc2.bias"].fill(np.inf)),
        "fp16 in fp32": ("fp32", lambda t: t.__setitem__("fc2.bias", np.zeros(10, np.float16))),
    }


@pytest.mark.parametrize("case", sorted(_mutations()))
def test_decode_is_strict(case: str) -> None:
    encoding, mutate = _mutations()[case]
    base, new = lenet_pair()
    enc = encode_update(new, base, encoding)
    mutate(enc)
    with pytest.raises(EncodingError):
        decode_update(enc, base, encoding)


def test_names_must_match_when_encoding() -> None:
    base, new = lenet_pair()
    new.pop("fc2.bias")
    with pytest.raises(EncodingError, match="names"):
        encode_update(new, base, "int8")


def test_non_float_tensors_pass_through() -> None:
    base: Arrays = {"w": np.ones((3, 2), np.float32), "steps": np.array([7], np.int64)}
    new: Arrays = {"w": np.full((3, 2), 1.5, np.float32), "steps": np.array([8], np.int64)}
    for encoding in ENCODINGS:
        enc = encode_update(new, base, encoding)
        assert enc["steps"].dtype == np.int64
        dec = decode_update(enc, base, encoding)
        assert dec["steps"].tolist() == [8]
        assert np.allclose(dec["w"], 1.5, atol=0.01)
