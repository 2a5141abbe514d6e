from __future__ import annotations

import numpy as np
import pytest
import safetensors.numpy
import torch

from work_server.ml.shards import (
    decode_shard,
    decode_weights,
    encode_shard,
    encode_weights,
    read_metadata,
)
from yadml_trainer.models import initial_state


def _shard(n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), (np.arange(n) % 10).astype(np.int64)


def test_shard_round_trip() -> None:
    images, labels = _shard()
    out_images, out_labels = decode_shard(encode_shard(images, labels))
    np.testing.assert_array_equal(out_images, images)
    np.testing.assert_array_equal(out_labels, labels)
    assert out_images.dtype == np.uint8
    assert out_labels.dtype == np.int64


def test_encode_shard_casts_int_labels() -> None:
    images, labels = _shard()
    _, out = decode_shard(encode_shard(images, labels.astype(np.uint8)))
    assert out.dtype == np.int64


@pytest.mark.parametrize(
    ("images", "labels", "why"),
    [
        (np.zeros((2, 28, 28), np.float32), np.zeros(2, np.int64), r"got float32 \[2, 28, 28\]"),
        (np.zeros((2, 28, 27), np.uint8), np.zeros(2, np.int64), r"got uint8 \[2, 28, 27\]"),
        (np.zeros((2, 28, 28), np.uint8), np.zeros(3, np.int64), "2 images but 3 labels"),
        (np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64), "shard is empty"),
        (np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.float32), r"int64 \[N\], got float32"),
    ],
)
def test_encode_shard_rejects(images: np.ndarray, labels: np.ndarray, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        encode_shard(images, labels)


def test_decode_shard_rejects_bad_blobs() -> None:
    with pytest.raises(ValueError, match="safetensors"):
        decode_shard(b"garbage")
    wrong_names = safetensors.numpy.save({"x": np.zeros((1, 28, 28), np.uint8)})
    with pytest.raises(ValueError, match="exactly"):
        decode_shard(wrong_names)
    wrong_dtype = safetensors.numpy.save(
        {"images": np.zeros((1, 28, 28), np.uint8), "labels": np.zeros(1, np.int32)}
    )
    with pytest.raises(ValueError, match="int64"):
        decode_shard(wrong_dtype)


def test_weights_round_trip_with_metadata() -> None:
    state = initial_state("lenet", 0)
    data = encode_weights(state, metadata={"report": '{"a": 1}'})
    out = decode_weights(data)
    assert out.keys() == state.keys()
    for k in state:
        assert torch.equal(out[k], state[k])
        assert out[k].dtype == state[k].dtype
    assert read_metadata(data) == {"report": '{"a": 1}'}
    assert read_metadata(encode_weights(state)) == {}


def test_encode_weights_non_contiguous() -> None:
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3).t()
    out = decode_weights(encode_weights({"t": t}))
    assert torch.equal(out["t"], t)


def test_decode_weights_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a safetensors weights file"):
        decode_weights(b"\x00" * 3)
    with pytest.raises(ValueError, match="not a safetensors file: bad header: "):
        read_metadata(b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}")
    with pytest.raises(ValueError, match="not a safetensors file: bad header length"):
        read_metadata(b"\xff" * 16)
