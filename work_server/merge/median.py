"""Coordinate-wise median (Yin et al. 2018): robust to a minority of arbitrary updates.

Every coordinate of the new weights is the median of that coordinate over the K updates;
for an even K, the mean of the two middle values (``torch.quantile(q=0.5)`` semantics).
Sample counts are ignored: every update has one vote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

import torch

from work_server.merge.base import MergePolicy, Update, coordinate_wise
from work_server.merge.select import median_of_block
from work_server.merge.spec import MergeSpecBase

__all__ = ["Median", "MedianSpec", "coordinate_median"]


def coordinate_median(stacked: torch.Tensor) -> torch.Tensor:
    """Median over dim 0 of ``stacked`` ``[K, ...]``; mean of the two middle values if K even.

    The plain definition (a full sort), kept as the reference: :class:`Median` computes the
    same values block by block with :func:`~work_server.merge.select.median_of_block`."""
    k = stacked.shape[0]
    if k == 0:
        raise ValueError("no tensors")
    ordered = torch.sort(stacked, dim=0).values
    if k % 2:
        return ordered[k // 2].clone()
    return (ordered[k // 2 - 1] + ordered[k // 2]) / 2


class Median(MergePolicy):
    name: ClassVar[str] = "median"

    def merge(
        self, updates: Sequence[Update], previous: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return coordinate_wise(updates, previous, median_of_block)


class MedianSpec(MergeSpecBase):
    method: Literal["median"] = "median"

    def build(self) -> Median:
        return Median()
