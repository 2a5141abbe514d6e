from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from tests.requirements import require
from work_server.ml import datasets
from work_server.ml.datasets import DatasetNotFound, load_dataset, read_idx, upscale_digits


def _idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def _write_fake_mnist(directory: Path, n_train: int = 6, n_test: int = 4, gz: bool = True) -> None:
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for stem, arr in files.items():
        data = _idx_bytes(arr)
        if gz:
            (directory / (stem + ".gz")).write_bytes(gzip.compress(data))
        else:
            (directory / stem).write_bytes(data)


def test_read_idx_raw_and_gz(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(_idx_bytes(arr))
    (tmp_path / "a.gz").write_bytes(gzip.compress(_idx_bytes(arr)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), arr)


def test_read_idx_big_endian_int32(tmp_path: Path) -> None:
    arr = np.array([1, -2, 70000], dtype=">i4")
    (tmp_path / "b").write_bytes(_idx_bytes(arr, 0x0C))
    out = read_idx(tmp_path / "b")
    assert out.dtype == np.int32
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, [1, -2, 70000])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "magic"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "element type"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x02" + struct.pack(">I", 1), "truncated"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 3) + b"\x00", "payload"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x00\x00", "payload"),
    ],
)
def test_read_idx_rejects_malformed(tmp_path: Path, data: bytes, match: str) -> None:
    (tmp_path / "bad").write_bytes(data)
    with pytest.raises(ValueError, match=match):
        read_idx(tmp_path / "bad")


def test_load_mnist_from_dir_gz_and_raw(tmp_path: Path) -> None:
    _write_fake_mnist(tmp_path / "gz", gz=True)
    _write_fake_mnist(tmp_path / "raw", gz=False)
    for sub in ("gz", "raw"):
        ds = load_dataset("mnist", data_dir=tmp_path / sub)
        assert ds.name == "mnist"
        assert ds.train_images.shape == (6, 28, 28)
        assert ds.train_images.dtype == np.uint8
        assert ds.train_labels.dtype == np.int64
        assert ds.test_labels.shape == (4,)
        assert ds.num_classes == 10
    # A parent directory holding mnist/ is accepted too.
    _write_fake_mnist(tmp_path / "parent" / "mnist")
    assert load_dataset("mnist", data_dir=tmp_path / "parent").train_images.shape == (6, 28, 28)


def test_load_dataset_is_cached(tmp_path: Path) -> None:
    _write_fake_mnist(tmp_path / "c")
    assert load_dataset("mnist", data_dir=tmp_path / "c") is load_dataset(
        "mnist", data_dir=tmp_path / "c"
    )


def test_env_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_fake_mnist(tmp_path / "m", n_train=7)
    _write_fake_mnist(tmp_path / "f", n_train=9)
    monkeypatch.setenv("YADML_DATA_DIR", str(tmp_path / "m"))
    monkeypatch.setenv("YADML_FASHION_DIR", str(tmp_path / "f"))
    assert len(load_dataset("mnist").train_labels) == 7
    assert len(load_dataset("fashion-mnist").train_labels) == 9


def test_missing_files_list_searched_paths(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound) as info:
        load_dataset("mnist", data_dir=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
    assert info.value.searched
    with pytest.raises(DatasetNotFound):
        load_dataset("fashion-mnist", fashion_dir=tmp_path)


def test_mismatched_label_count(tmp_path: Path) -> None:
    _write_fake_mnist(tmp_path)
    labels = np.zeros(5, dtype=np.uint8)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    with pytest.raises(ValueError, match="labels"):
        load_dataset("mnist", data_dir=tmp_path)


def test_unknown_dataset() -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar")


def test_digits() -> None:
    ds = load_dataset("digits")
    assert ds.train_images.shape == (1437, 28, 28)
    assert ds.test_images.shape == (360, 28, 28)
    assert ds.train_images.dtype == np.uint8
    assert ds.train_labels.dtype == np.int64
    assert ds.train_images.max() == 255
    # 4-pixel black border like MNIST's 20x20 box in 28x28.
    assert not ds.train_images[:, :4].any()
    assert not ds.train_images[:, -4:].any()
    assert not ds.train_images[:, :, :4].any()
    assert not ds.train_images[:, :, -4:].any()
    # Stratified: every class in both sets, in proportion.
    train_counts = np.bincount(ds.train_labels, minlength=10)
    test_counts = np.bincount(ds.test_labels, minlength=10)
    assert (test_counts >= 35).all()
    assert (train_counts >= 139).all()
    assert load_dataset("digits") is ds


def test_upscale_digits_constant_image() -> None:
    out = upscale_digits(np.full((1, 8, 8), 16.0))
    assert (out[0, 4:24, 4:24] == 255).all()
    assert out.sum() == 255 * 400


def test_real_mnist_headers() -> None:
    directory = None
    for candidate in datasets._mnist_candidates(None):
        if datasets._has_idx_files(candidate):
            directory = candidate
            break
    require(directory is not None, "MNIST IDX files not available (make data)")
    assert directory is not None
    path = datasets._find_idx(directory, "t10k-labels-idx1-ubyte")
    assert path is not None
    labels = read_idx(path)
    assert labels.shape == (10000,)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels[:5], [7, 2, 1, 0, 4])
