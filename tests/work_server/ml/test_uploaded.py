"""Uploaded datasets: strict validation (no pickle, shapes, labels, sizes) and the canonical
blob (the same bytes whatever the upload format)."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save

from work_server.ml.uploaded import (
    DatasetLimits,
    InvalidDataset,
    decode_dataset,
    encode_dataset,
    parse_upload,
)


def images_labels(n: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n) % 10


def npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def test_npz_with_images_and_labels_is_split_80_20() -> None:
    images, labels = images_labels(100)
    ds = parse_upload("d.npz", npz(images=images, labels=labels))
    assert len(ds.train_labels) == 80
    assert len(ds.test_labels) == 20
    assert ds.train_labels.dtype == np.int64
    assert sorted(np.bincount(ds.test_labels).tolist()) == [2] * 10  # per class


def test_safetensors_with_a_given_split() -> None:
    images, labels = images_labels(60)
    data = save(
        {
            "train_images": images[:50],
            "train_labels": labels[:50].astype(np.uint8),
            "test_images": images[50:],
            "test_labels": labels[50:].astype(np.int32),
        }
    )
    ds = parse_upload("d.safetensors", data)
    assert ds.train_images.shape == (50, 28, 28)
    assert len(ds.test_labels) == 10


def test_canonical_blob_round_trips() -> None:
    images, labels = images_labels(50)
    ds = parse_upload("d.npz", npz(images=images, labels=labels))
    blob = encode_dataset(ds)
    again = decode_dataset(blob)
    assert np.array_equal(again.train_images, ds.train_images)
    assert np.array_equal(again.test_labels, ds.test_labels)
    # the same data uploaded as safetensors gives the same blob
    ds2 = parse_upload(
        "d.safetensors",
        save(
            {
                "train_images": ds.train_images,
                "train_labels": ds.train_labels,
                "test_images": ds.test_images,
                "test_labels": ds.test_labels,
            }
        ),
    )
    assert encode_dataset(ds2) == blob


def pickled_npz() -> bytes:
    images, _ = images_labels(20)
    buf = io.BytesIO()
    np.savez(buf, images=images, labels=np.array([object()] * 20, dtype=object))
    return buf.getvalue()


def _zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("images.npy", b"\0" * (2 << 20))
        zf.writestr("labels.npy", b"\0" * 16)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("filename", "data", "message"),
    [
        ("d.npz", pickled_npz(), "unreadable .npz"),
        ("d.npz", b"PK\x03\x04 not a zip", "not a valid .npz"),
        (
            "d.npz",
            npz(images=np.zeros((20, 28, 28), np.float32), labels=np.zeros(20, int)),
            "uint8",
        ),
        ("d.npz", npz(images=np.zeros((20, 32, 32), np.uint8), labels=np.zeros(20, int)), "28, 28"),
        ("d.npz", npz(images=np.zeros((20, 28, 28), np.uint8), labels=np.full(20, 10)), "0..9"),
        (
            "d.npz",
            npz(images=np.zeros((20, 28, 28), np.uint8), labels=np.zeros(19, int)),
            "20 labels",
        ),
        ("d.npz", npz(images=np.zeros((20, 28, 28), np.uint8), labels=np.zeros(20)), "integers"),
        (
            "d.npz",
            npz(images=np.zeros((20, 28, 28), np.uint8), extra=np.zeros(20, int)),
            "unexpected",
        ),
        ("d.npz", npz(images=np.zeros((5, 28, 28), np.uint8), labels=np.zeros(5, int)), "at least"),
        ("d.npz", _zip_bomb(), "uncompressed"),
        ("d.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}", "safetensors"),
        ("d.pkl", b"\x80\x04K\x01.", ".npz or .safetensors"),
    ],
)
def test_bad_uploads_are_refused(filename: str, data: bytes, message: str) -> None:
    limits = DatasetLimits(max_bytes=1 << 20)
    with pytest.raises(InvalidDataset, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_upload(filename, data, limits)


def test_too_big_a_file_is_refused() -> None:
    with pytest.raises(InvalidDataset, match="limit"):
        parse_upload("d.npz", b"x" * 101, DatasetLimits(max_bytes=100))


def test_too_many_samples_are_refused() -> None:
    images, labels = images_labels(100)
    with pytest.raises(InvalidDataset, match="samples"):
        parse_upload("d.npz", npz(images=images, labels=labels), DatasetLimits(max_samples=50))
