"""Fast order statistics over the K updates, one coordinate at a time (numpy kernels).

The coordinate-wise policies (median, trimmed mean) need, for every coordinate, the K values
of the K updates in order. ``torch.sort(dim=0)`` on a float64 ``[K, n]`` stack does this
through a strided per-lane sort and is ~50-100 ns per value; these kernels do the same
selection on a float32 (or the tensors' own dtype) block in two ways:

* small K (``<= NETWORK_MAX_K``): a sorting network over the K rows of the ``[K, n]`` block,
  each compare-exchange one vectorised ``fmin``/``maximum`` over the n coordinates;
* larger K: the block is transposed (in cache) to ``[n, K]`` and every row goes through numpy's
  SIMD ``sort`` (faster than ``partition`` on rows of 100-1000 values, measured).

Both order NaN last, like ``torch.sort``/``numpy.sort``, so results match the reference
implementations (:func:`~work_server.merge.median.coordinate_median`,
:func:`~work_server.merge.trimmed_mean.coordinate_trimmed_mean`): the median is bit-identical
(the middle values are selected, not computed, and averaged in float64); the trimmed mean sums
the same values in float64, in a different order.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt
import torch

__all__ = [
    "NETWORK_MAX_K",
    "median_of_block",
    "network",
    "sort_rows_in_place",
    "trimmed_mean_of_block",
]

Block = npt.NDArray[np.floating]

#: Up to this many updates, a sorting network over rows beats transposing + per-row selection.
NETWORK_MAX_K = 24


@cache
def network(k: int) -> tuple[tuple[int, int], ...]:
    """Batcher's odd-even merge sort comparators ``(i, j)``, ``i < j``, for ``k`` inputs (the
    power-of-two network with every comparator touching an index ``>= k`` dropped: those
    inputs act as +inf and never move)."""
    n = 1
    while n < k:
        n *= 2
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < n:
        q = p
        while q >= 1:
            for j in range(q % p, n - q, 2 * q):
                for i in range(min(q, n - j - q)):
                    a, b = i + j, i + j + q
                    if a // (2 * p) == b // (2 * p) and b < k:
                        pairs.append((a, b))
            q //= 2
        p *= 2
    return tuple(pairs)


def sort_rows_in_place(block: Block) -> None:
    """Sort ``block`` ``[K, n]`` along axis 0 (every column independently), NaN last."""
    tmp = np.empty_like(block[0])
    for i, j in network(block.shape[0]):
        a, b = block[i], block[j]
        np.fmin(a, b, out=tmp)  # the smaller one; the number if the other is NaN
        np.maximum(a, b, out=b)  # the larger one; NaN if either is NaN
        a[...] = tmp


def _rows(block: Block) -> Block:
    """``block`` ``[K, n]`` transposed to a C-contiguous ``[n, K]`` copy (torch's copy is
    cache-blocked: numpy's ``ascontiguousarray(block.T)`` is ~10x slower at K = 1000)."""
    rows = np.empty(block.shape[::-1], dtype=block.dtype)
    torch.from_numpy(rows).copy_(torch.from_numpy(block).T)
    return rows


def median_of_block(block: Block) -> Block:
    """Median over axis 0 of ``block`` ``[K, n]`` (destroyed); for an even K the float64 mean of
    the two middle values. Returns float64 ``[n]`` for even K, ``block``'s dtype for odd K."""
    k = block.shape[0]
    if k == 0:
        raise ValueError("no values")
    half = k // 2
    if k <= NETWORK_MAX_K:
        sort_rows_in_place(block)
        lo, hi = block[(k - 1) // 2], block[half]
    else:
        rows = _rows(block)
        rows.sort(axis=1)
        lo, hi = rows[:, (k - 1) // 2], rows[:, half]
    median: Block
    if k % 2:
        median = hi.copy()
    else:
        with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf is NaN, as in torch
            median = (lo.astype(np.float64) + hi) / 2
    return median


def trimmed_mean_of_block(block: Block, cut: int) -> Block:
    """Mean over axis 0 of ``block`` ``[K, n]`` (destroyed) without the ``cut`` smallest and
    ``cut`` largest values of each column, summed in float64. Returns float64 ``[n]``."""
    k = block.shape[0]
    if not 0 <= 2 * cut < k:
        raise ValueError(f"cannot trim {cut} of {k} values from each side")
    with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf is NaN, as in torch
        return _trimmed_mean(block, cut)


def _trimmed_mean(block: Block, cut: int) -> Block:
    k = block.shape[0]
    total: Block
    if cut == 0:
        total = block.sum(axis=0, dtype=np.float64)
    elif k <= NETWORK_MAX_K:
        sort_rows_in_place(block)
        total = block[cut : k - cut].sum(axis=0, dtype=np.float64)
    else:
        rows = _rows(block)
        rows.sort(axis=1)
        middle = torch.from_numpy(rows)[:, cut : k - cut]  # torch's float64 row sum is 2x numpy's
        total = middle.sum(dim=1, dtype=torch.float64).numpy()
    mean: Block = total / (k - 2 * cut)
    return mean
