"""Datasets uploaded by an operator: strict validation of an untrusted ``.npz`` or
safetensors file, and the canonical blob a job trains from.

Accepted input (either format):

* four arrays ``train_images``, ``train_labels``, ``test_images``, ``test_labels``; or
* two arrays ``images``, ``labels``, split here into 80 % train / 20 % test with a fixed
  seed (a per-class split, so every class present is in both parts when it has >= 2 samples).

Images are uint8 ``[N, 28, 28]``; labels any integer dtype, values 0..9, one per image.
Nothing is unpickled: ``.npz`` members are read with ``allow_pickle=False`` after their
names and uncompressed sizes were checked in the zip directory (no zip bombs), and
safetensors files go through the bounded parser of ``work_server.services.safetensors_check``.

The stored blob is a safetensors file with the four arrays (labels as int64): the same bytes
for the same data, whatever the upload format, so blobs are content-addressed by their data.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
from safetensors.numpy import save

from work_server.ml.datasets import Dataset
from work_server.services.safetensors_check import SafetensorsError, parse_header, tensor_array

__all__ = [
    "DatasetLimits",
    "InvalidDataset",
    "decode_dataset",
    "encode_dataset",
    "parse_upload",
]

NUM_CLASSES = 10
SPLIT_NAMES = ("train_images", "train_labels", "test_images", "test_labels")
PLAIN_NAMES = ("images", "labels")
TEST_FRACTION = 0.2
SPLIT_SEED = 0


class InvalidDataset(ValueError):
    """The upload is not an acceptable dataset; the message says why (shown to the operator)."""


@dataclass(frozen=True)
class DatasetLimits:
    max_bytes: int = 64 * 1024 * 1024  # the file itself, and the sum of uncompressed arrays
    max_samples: int = 100_000  # train + test
    min_train: int = 10
    min_test: int = 10


def _check_images(name: str, arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[1:] != (28, 28):
        raise InvalidDataset(
            f"{name}: expected uint8 [N, 28, 28], got {arr.dtype} {list(arr.shape)}"
        )
    return np.ascontiguousarray(arr)


def _check_labels(name: str, arr: np.ndarray[Any, Any], n: int) -> np.ndarray[Any, Any]:
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InvalidDataset(
            f"{name}: expected {n} labels (one per image), got shape {list(arr.shape)}"
        )
    if arr.dtype.kind not in "iu":
        raise InvalidDataset(f"{name}: labels must be integers, got {arr.dtype}")
    if n and (int(arr.min()) < 0 or int(arr.max()) >= NUM_CLASSES):
        raise InvalidDataset(f"{name}: labels must be in 0..{NUM_CLASSES - 1}")
    return np.ascontiguousarray(arr.astype(np.int64))


def _read_npz(data: bytes, limits: DatasetLimits) -> dict[str, np.ndarray[Any, Any]]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InvalidDataset("not a valid .npz (zip) file") from None
    with zf:
        infos = zf.infolist()
        allowed = {f"{n}.npy" for n in SPLIT_NAMES + PLAIN_NAMES}
        names = [i.filename for i in infos]
        unknown = sorted(set(names) - allowed)
        if unknown or len(set(names)) != len(names):
            raise InvalidDataset(
                f"unexpected arrays in the .npz: {unknown[:5]}; allowed: "
                f"{', '.join(SPLIT_NAMES)} or {', '.join(PLAIN_NAMES)}"
            )
        if sum(i.file_size for i in infos) > limits.max_bytes:
            raise InvalidDataset(f"arrays exceed {limits.max_bytes} bytes uncompressed")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: np.asarray(npz[name]) for name in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidDataset(f"unreadable .npz: {exc}") from None


def _read_safetensors(data: bytes) -> dict[str, np.ndarray[Any, Any]]:
    try:
        header = parse_header(data)
    except SafetensorsError as exc:
        raise InvalidDataset(f"not a valid safetensors file: {exc}") from None
    unknown = sorted(set(header.tensors) - set(SPLIT_NAMES + PLAIN_NAMES))
    if unknown:
        raise InvalidDataset(f"unexpected tensors: {unknown[:5]}")
    return {name: tensor_array(data, header, name) for name in header.tensors}


def _split(labels: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Per-class 80/20 split with a fixed seed: (train indices, test indices), sorted."""
    rng = np.random.default_rng(SPLIT_SEED)
    train: list[np.ndarray[Any, Any]] = []
    test: list[np.ndarray[Any, Any]] = []
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = round(len(idx) * TEST_FRACTION) if len(idx) >= 2 else 0
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def parse_upload(
    filename: str, data: bytes, limits: DatasetLimits | None = None, *, name: str = "upload"
) -> Dataset:
    """Validate an uploaded ``.npz``/``.safetensors`` file and return its dataset.

    Raises :class:`InvalidDataset` with a human-readable reason for anything unacceptable.
    """
    limits = limits or DatasetLimits()
    if len(data) > limits.max_bytes:
        raise InvalidDataset(f"file is {len(data)} bytes; the limit is {limits.max_bytes}")
    lower = filename.lower()
    if lower.endswith(".npz"):
        arrays = _read_npz(data, limits)
    elif lower.endswith(".safetensors"):
        arrays = _read_safetensors(data)
    else:
        raise InvalidDataset("the file must be a .npz or .safetensors file")
    if set(arrays) == set(SPLIT_NAMES):
        train_images = _check_images("train_images", arrays["train_images"])
        test_images = _check_images("test_images", arrays["test_images"])
        train_labels = _check_labels("train_labels", arrays["train_labels"], len(train_images))
        test_labels = _check_labels("test_labels", arrays["test_labels"], len(test_images))
    elif set(arrays) == set(PLAIN_NAMES):
        images = _check_images("images", arrays["images"])
        labels = _check_labels("labels", arrays["labels"], len(images))
        if len(images) > limits.max_samples:
            raise InvalidDataset(f"{len(images)} samples; the limit is {limits.max_samples}")
        train_idx, test_idx = _split(labels)
        train_images, train_labels = images[train_idx], labels[train_idx]
        test_images, test_labels = images[test_idx], labels[test_idx]
    else:
        raise InvalidDataset(
            f"expected the arrays {', '.join(SPLIT_NAMES)} or {', '.join(PLAIN_NAMES)}; "
            f"got {', '.join(sorted(arrays)) or 'none'}"
        )
    total = len(train_images) + len(test_images)
    if total > limits.max_samples:
        raise InvalidDataset(f"{total} samples; the limit is {limits.max_samples}")
    if len(train_images) < limits.min_train or len(test_images) < limits.min_test:
        raise InvalidDataset(
            f"need at least {limits.min_train} train and {limits.min_test} test samples, "
            f"got {len(train_images)} and {len(test_images)}"
        )
    return Dataset(
        name,
        np.ascontiguousarray(train_images),
        np.ascontiguousarray(train_labels),
        np.ascontiguousarray(test_images),
        np.ascontiguousarray(test_labels),
    )


def encode_dataset(dataset: Dataset) -> bytes:
    """The canonical blob of a dataset (safetensors, four arrays, int64 labels)."""
    return save(
        {
            "train_images": np.ascontiguousarray(dataset.train_images, dtype=np.uint8),
            "train_labels": np.ascontiguousarray(dataset.train_labels, dtype=np.int64),
            "test_images": np.ascontiguousarray(dataset.test_images, dtype=np.uint8),
            "test_labels": np.ascontiguousarray(dataset.test_labels, dtype=np.int64),
        }
    )


def decode_dataset(data: bytes, *, name: str = "upload") -> Dataset:
    """A dataset blob written by :func:`encode_dataset` (checked again: blobs are files)."""
    return parse_upload("dataset.safetensors", data, DatasetLimits(max_bytes=len(data)), name=name)
