"""Split a training set into shards, one per work unit (IID or non-IID).

Methods (:class:`yadml_common.wire.SplitSpec`):

* ``random``: a random permutation cut into ``n_shards`` near-equal pieces.
* ``stratified``: each class's indices are shuffled, all classes are laid end to end and
  dealt round-robin, so every shard holds each class in proportion (within one sample)
  and shard sizes differ by at most one.
* ``dirichlet``: for every class, shard proportions are drawn from
  ``Dirichlet(alpha, ..., alpha)`` and the class's shuffled indices are cut accordingly
  (small ``alpha`` -> very skewed label distributions). The whole draw is repeated until
  every shard is non-empty (at most ``DIRICHLET_MAX_TRIES`` times); if that never happens,
  each empty shard takes one sample from the then-largest shard, deterministically.
* ``shards`` (McMahan et al.): indices sorted by label (ties in random order) are cut into
  ``n_shards * labels_per_shard`` contiguous pieces and each shard receives
  ``labels_per_shard`` random pieces, so it sees about ``labels_per_shard`` classes.
  When there are fewer samples than pieces, ``labels_per_shard`` is lowered to
  ``len(labels) // n_shards``.

All methods are deterministic given ``seed`` (``numpy.random.default_rng``); the shards are
disjoint, cover the whole set, are non-empty and returned as sorted int64 index arrays.
"""

from __future__ import annotations

import numpy as np

from work_server.job_spec import SplitSpec

__all__ = ["DIRICHLET_MAX_TRIES", "split_indices"]

DIRICHLET_MAX_TRIES = 100


def split_indices(
    labels: np.ndarray, n_shards: int, spec: SplitSpec, seed: int
) -> list[np.ndarray]:
    """Indices of ``labels`` for each of ``n_shards`` shards, according to ``spec``."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    n = len(labels)
    if n_shards > n:
        raise ValueError(f"cannot split {n} samples into {n_shards} non-empty shards")
    rng = np.random.default_rng(seed)
    if spec.method == "random":
        shards = np.array_split(rng.permutation(n), n_shards)
    elif spec.method == "stratified":
        shards = _stratified(labels, n_shards, rng)
    elif spec.method == "dirichlet":
        shards = _dirichlet(labels, n_shards, spec.alpha, rng)
    elif spec.method == "shards":
        shards = _label_shards(labels, n_shards, spec.labels_per_shard, rng)
    else:  # pragma: no cover - SplitSpec validates the method
        raise ValueError(f"unknown split method {spec.method!r}")
    out = [np.sort(np.asarray(s, dtype=np.int64)) for s in shards]
    if any(len(s) == 0 for s in out):  # pragma: no cover - guaranteed by the methods
        raise AssertionError("split produced an empty shard")
    return out


def _class_indices(labels: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled indices of each class present, classes in ascending order."""
    return [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]


def _stratified(labels: np.ndarray, n_shards: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = np.concatenate(_class_indices(labels, rng))
    return [order[i::n_shards] for i in range(n_shards)]


def _dirichlet(
    labels: np.ndarray, n_shards: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    per_class = _class_indices(labels, rng)
    parts: list[list[np.ndarray]] = []
    for _ in range(DIRICHLET_MAX_TRIES):
        parts = [[] for _ in range(n_shards)]
        for idx in per_class:
            proportions = rng.dirichlet(np.full(n_shards, alpha))
            cuts = (np.cumsum(proportions)[:-1] * len(idx)).astype(np.int64)
            for shard, piece in enumerate(np.split(idx, cuts)):
                parts[shard].append(piece)
        if all(sum(len(p) for p in shard_parts) > 0 for shard_parts in parts):
            break
    shards = [np.concatenate(p) if p else np.empty(0, np.int64) for p in parts]
    # Repair (rare: tiny alpha with many shards): move one sample into each empty shard.
    for i in range(n_shards):
        if len(shards[i]) == 0:
            donor = int(np.argmax([len(s) for s in shards]))
            shards[i] = shards[donor][-1:]
            shards[donor] = shards[donor][:-1]
    return shards


def _label_shards(
    labels: np.ndarray, n_shards: int, labels_per_shard: int, rng: np.random.Generator
) -> list[np.ndarray]:
    per_shard = max(1, min(labels_per_shard, len(labels) // n_shards))
    order = rng.permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]
    pieces = np.array_split(order, n_shards * per_shard)
    assignment = rng.permutation(len(pieces))
    return [
        np.concatenate([pieces[j] for j in assignment[i * per_shard : (i + 1) * per_shard]])
        for i in range(n_shards)
    ]
