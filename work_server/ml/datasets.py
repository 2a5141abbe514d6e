"""Datasets a job can train on: MNIST, Fashion-MNIST (IDX files) and sklearn's ``digits``.

Every dataset is returned in the same shape: uint8 images ``[N, 28, 28]`` (0..255) and int64
labels ``[N]`` (0..9), split into train and test sets.

* ``mnist``: the four IDX files (``train-images-idx3-ubyte[.gz]`` ...). Directory: the
  ``data_dir`` argument, else ``$YADML_DATA_DIR``, else ``<repo>/../shared/data/mnist``, else
  ``<repo>/data/mnist``. A directory that holds a ``mnist/`` sub-directory with the files
  is accepted too, so ``--data-dir`` may name either the MNIST folder or its parent.
* ``fashion-mnist``: same file names. Directory: the ``fashion_dir`` argument, else
  ``$YADML_FASHION_DIR``, else ``<data_dir>/fashion-mnist`` when ``data_dir`` is given,
  else ``/usr/share/datasets/fashion-mnist``.
* ``digits``: :func:`sklearn.datasets.load_digits` (1,797 images 8x8, values 0..16), bundled
  with scikit-learn. Each image is scaled to 0..255, resized to 20x20 with bilinear
  interpolation (``torch.nn.functional.interpolate``, ``align_corners=False``) and centred
  in a 28x28 frame with a 4-pixel black border, the way MNIST digits sit in a 20x20 box
  inside 28x28. Split: fixed stratified 80/20 (``train_test_split(..., random_state=0)``),
  1,437 train / 360 test.

Loaded arrays are cached per (name, directory) with :func:`functools.lru_cache`; the
arrays are shared between callers and must not be modified in place.
"""

from __future__ import annotations

import functools
import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_FASHION_DIR",
    "Dataset",
    "DatasetNotFound",
    "load_dataset",
    "read_idx",
]

DATASET_NAMES: tuple[str, ...] = ("mnist", "fashion-mnist", "digits")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_DIR_ENV = "YADML_DATA_DIR"
FASHION_DIR_ENV = "YADML_FASHION_DIR"

#: IDX type byte -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

#: (role, stem) of the four IDX files of MNIST-style datasets.
_IDX_FILES: tuple[tuple[str, str], ...] = (
    ("train_images", "train-images-idx3-ubyte"),
    ("train_labels", "train-labels-idx1-ubyte"),
    ("test_images", "t10k-images-idx3-ubyte"),
    ("test_labels", "t10k-labels-idx1-ubyte"),
)


class DatasetNotFound(FileNotFoundError):
    """The files of a dataset are in none of the searched directories."""

    def __init__(self, name: str, searched: list[Path]) -> None:
        self.name = name
        self.searched = list(searched)
        where = ", ".join(str(p) for p in searched) or "(no directory)"
        names = ", ".join(stem + "[.gz]" for _, stem in _IDX_FILES)
        super().__init__(f"dataset {name!r} not found: looked for {names} in {where}")


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    train_images: np.ndarray  # uint8 [N, 28, 28]
    train_labels: np.ndarray  # int64 [N]
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int = 10


# --------------------------------------------------------------------------- IDX


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw, detected from its first bytes).

    Validates the magic number (two zero bytes, a known type byte, a dimension count >= 1)
    and that the payload size matches the dimensions exactly. Returns a native-endian array.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt gzip data: {exc}") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zero0, zero1, type_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0:
        raise ValueError(f"{path}: bad IDX magic {raw[:4].hex()}")
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX element type 0x{type_code:02x}")
    if ndim < 1:
        raise ValueError(f"{path}: IDX file with 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    payload = len(raw) - header_len
    if payload != expected:
        raise ValueError(
            f"{path}: IDX payload is {payload} bytes, dimensions {dims} need {expected}"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(dims)
    # Copy into a writable native-endian array (frombuffer on bytes is read-only).
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _find_idx(directory: Path, stem: str) -> Path | None:
    variants = (
        stem + ".gz",
        stem,
        stem.replace("-idx", ".idx") + ".gz",
        stem.replace("-idx", ".idx"),
    )
    for variant in variants:
        candidate = directory / variant
        if candidate.is_file():
            return candidate
    return None


def _has_idx_files(directory: Path) -> bool:
    return all(_find_idx(directory, stem) is not None for _, stem in _IDX_FILES)


def _resolve_dir(name: str, candidates: list[Path]) -> Path:
    searched: list[Path] = []
    for base in candidates:
        for directory in (base, base / name):
            searched.append(directory)
            if _has_idx_files(directory):
                return directory.resolve()
    raise DatasetNotFound(name, searched)


def _mnist_candidates(data_dir: Path | None) -> list[Path]:
    if data_dir is not None:
        return [Path(data_dir)]
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return [Path(env)]
    return [REPO_ROOT.parent / "shared" / "data" / "mnist", REPO_ROOT / "data" / "mnist"]


def _fashion_candidates(data_dir: Path | None, fashion_dir: Path | None) -> list[Path]:
    if fashion_dir is not None:
        return [Path(fashion_dir)]
    env = os.environ.get(FASHION_DIR_ENV)
    if env:
        return [Path(env)]
    candidates = [] if data_dir is None else [Path(data_dir) / "fashion-mnist"]
    return [*candidates, DEFAULT_FASHION_DIR]


def _check_images(path: Path, images: np.ndarray) -> np.ndarray:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{path}: expected uint8 images [N, 28, 28], got {images.dtype} {images.shape}"
        )
    return images


def _check_labels(path: Path, labels: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{path}: expected {n} labels, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: labels must be integers, got {labels.dtype}")
    out = labels.astype(np.int64)
    if n and (out.min() < 0 or out.max() >= num_classes):
        raise ValueError(f"{path}: labels outside 0..{num_classes - 1}")
    return out


@functools.lru_cache(maxsize=8)
def _load_idx_dataset(name: str, directory: str) -> Dataset:
    base = Path(directory)
    arrays: dict[str, np.ndarray] = {}
    paths: dict[str, Path] = {}
    for role, stem in _IDX_FILES:
        found = _find_idx(base, stem)
        if found is None:  # removed since resolution
            raise DatasetNotFound(name, [base])
        paths[role] = found
        arrays[role] = read_idx(found)
    train_images = _check_images(paths["train_images"], arrays["train_images"])
    test_images = _check_images(paths["test_images"], arrays["test_images"])
    train_labels = _check_labels(
        paths["train_labels"], arrays["train_labels"], len(train_images), 10
    )
    test_labels = _check_labels(paths["test_labels"], arrays["test_labels"], len(test_images), 10)
    return Dataset(name, train_images, train_labels, test_images, test_labels)


def upscale_digits(images8: np.ndarray) -> np.ndarray:
    """sklearn digits ``[N, 8, 8]`` (0..16) -> uint8 ``[N, 28, 28]`` (0..255).

    Scaled to 0..255, bilinear resize to 20x20, zero-padded by 4 pixels on each side.
    """
    import torch
    from torch.nn import functional as F

    if images8.ndim != 3 or images8.shape[1:] != (8, 8):
        raise ValueError(f"expected [N, 8, 8] digits, got {images8.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images8, dtype=np.float32) * (255.0 / 16.0))
    x = F.interpolate(x.unsqueeze(1), size=(20, 20), mode="bilinear", align_corners=False)
    x = F.pad(x, (4, 4, 4, 4))
    out = x.squeeze(1).round_().clamp_(0, 255).to(torch.uint8)
    return out.numpy().copy()


@functools.lru_cache(maxsize=1)
def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = upscale_digits(np.asarray(bunch.images))
    labels = np.asarray(bunch.target, dtype=np.int64)
    idx = np.arange(len(labels))
    train_idx, test_idx = train_test_split(idx, test_size=0.2, stratify=labels, random_state=0)
    train_idx = np.sort(train_idx)
    test_idx = np.sort(test_idx)
    return Dataset(
        "digits",
        np.ascontiguousarray(images[train_idx]),
        np.ascontiguousarray(labels[train_idx]),
        np.ascontiguousarray(images[test_idx]),
        np.ascontiguousarray(labels[test_idx]),
    )


def load_dataset(
    name: str, *, data_dir: Path | None = None, fashion_dir: Path | None = None
) -> Dataset:
    """Load a dataset by name (``mnist``, ``fashion-mnist``, ``digits``); cached.

    Raises :class:`DatasetNotFound` (listing the directories searched) when the files are
    missing, ``ValueError`` for an unknown name or malformed files.
    """
    if name == "mnist":
        return _load_idx_dataset(name, str(_resolve_dir(name, _mnist_candidates(data_dir))))
    if name == "fashion-mnist":
        directory = _resolve_dir(name, _fashion_candidates(data_dir, fashion_dir))
        return _load_idx_dataset(name, str(directory))
    if name == "digits":
        return _load_digits()
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")
