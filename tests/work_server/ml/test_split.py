from __future__ import annotations

import numpy as np
import pytest

from work_server.job_spec import SplitSpec
from work_server.ml.split import split_indices

METHODS = ["random", "stratified", "dirichlet", "shards"]


def _labels(n: int = 1000, classes: int = 10, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n).astype(np.int64)


def _check_partition(shards: list[np.ndarray], n: int, n_shards: int) -> None:
    assert len(shards) == n_shards
    assert all(len(s) > 0 for s in shards)
    assert all(s.dtype == np.int64 for s in shards)
    allidx = np.concatenate(shards)
    assert len(allidx) == n == len(np.unique(allidx))
    assert allidx.min() == 0
    assert allidx.max() == n - 1


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n_shards", [1, 3, 10, 37])
def test_partition_and_determinism(method: str, n_shards: int) -> None:
    labels = _labels()
    spec = SplitSpec(method=method)
    a = split_indices(labels, n_shards, spec, seed=5)
    b = split_indices(labels, n_shards, spec, seed=5)
    _check_partition(a, len(labels), n_shards)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("method", METHODS)
def test_seed_changes_split(method: str) -> None:
    labels = _labels()
    spec = SplitSpec(method=method)
    a = split_indices(labels, 4, spec, seed=1)
    b = split_indices(labels, 4, spec, seed=2)
    assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_stratified_proportions() -> None:
    labels = _labels(2000)
    shards = split_indices(labels, 4, SplitSpec(method="stratified"), seed=0)
    total = np.bincount(labels, minlength=10)
    for s in shards:
        counts = np.bincount(labels[s], minlength=10)
        assert np.all(np.abs(counts - total / 4) <= 1)
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_random_sizes() -> None:
    shards = split_indices(_labels(1001), 4, SplitSpec(method="random"), seed=0)
    assert sorted(len(s) for s in shards) == [250, 250, 250, 251]


def test_dirichlet_small_alpha_is_skewed() -> None:
    labels = _labels(5000)
    shards = split_indices(labels, 5, SplitSpec(method="dirichlet", alpha=0.05), seed=0)
    _check_partition(shards, len(labels), 5)
    # Most shards are dominated by a few classes.
    top_share = [np.bincount(labels[s], minlength=10).max() / len(s) for s in shards]
    assert np.mean(top_share) > 0.4


def test_dirichlet_many_shards_tiny_alpha_still_non_empty() -> None:
    labels = _labels(50, classes=2)
    shards = split_indices(labels, 40, SplitSpec(method="dirichlet", alpha=0.001), seed=3)
    _check_partition(shards, 50, 40)


def test_shards_method_limits_labels() -> None:
    labels = np.repeat(np.arange(10), 100)
    shards = split_indices(labels, 10, SplitSpec(method="shards", labels_per_shard=2), seed=0)
    _check_partition(shards, 1000, 10)
    for s in shards:
        assert len(np.unique(labels[s])) <= 2


def test_shards_method_more_pieces_than_samples() -> None:
    labels = _labels(10)
    shards = split_indices(labels, 7, SplitSpec(method="shards", labels_per_shard=5), seed=0)
    _check_partition(shards, 10, 7)


def test_errors() -> None:
    spec = SplitSpec()
    with pytest.raises(ValueError, match="non-empty"):
        split_indices(_labels(5), 6, spec, seed=0)
    with pytest.raises(ValueError, match="n_shards must be >= 1, got 0"):
        split_indices(_labels(5), 0, spec, seed=0)
    with pytest.raises(ValueError, match=r"labels must be 1-D, got shape \(2, 2\)"):
        split_indices(np.zeros((2, 2), dtype=np.int64), 1, spec, seed=0)
    with pytest.raises(ValueError, match="labels must be integers, got float32"):
        split_indices(np.zeros(4, dtype=np.float32), 1, spec, seed=0)
