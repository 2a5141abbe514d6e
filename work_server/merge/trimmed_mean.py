"""Coordinate-wise trimmed mean (Yin et al. 2018).

For K updates and ``trim_ratio`` r (0 <= r < 0.5), every coordinate drops its
``floor(r * K)`` smallest and ``floor(r * K)`` largest values and averages the rest
(at least one value always remains). Sample counts are ignored: every update has one vote.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

import torch
from pydantic import Field

from work_server.merge.base import MergePolicy, Update, coordinate_wise
from work_server.merge.select import trimmed_mean_of_block
from work_server.merge.spec import MergeSpecBase

__all__ = ["TrimmedMean", "TrimmedMeanSpec", "coordinate_trimmed_mean"]


def coordinate_trimmed_mean(stacked: torch.Tensor, trim_ratio: float) -> torch.Tensor:
    """Trimmed mean over dim 0 of ``stacked`` ``[K, ...]``.

    The plain definition (a full sort), kept as the reference: :class:`TrimmedMean` computes
    the same values block by block with
    :func:`~work_server.merge.select.trimmed_mean_of_block`."""
    if not 0 <= trim_ratio < 0.5:
        raise ValueError(f"trim_ratio must be in [0, 0.5), got {trim_ratio}")
    k = stacked.shape[0]
    if k == 0:
        raise ValueError("no tensors")
    cut = math.floor(trim_ratio * k)
    if cut == 0:
        return stacked.mean(dim=0)
    ordered = torch.sort(stacked, dim=0).values
    return ordered[cut : k - cut].mean(dim=0)


class TrimmedMean(MergePolicy):
    name: ClassVar[str] = "trimmed_mean"

    def __init__(self, trim_ratio: float = 0.1) -> None:
        if not 0 <= trim_ratio < 0.5:
            raise ValueError(f"trim_ratio must be in [0, 0.5), got {trim_ratio}")
        self.trim_ratio = trim_ratio

    def merge(
        self, updates: Sequence[Update], previous: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        cut = math.floor(self.trim_ratio * len(updates))
        return coordinate_wise(updates, previous, lambda block: trimmed_mean_of_block(block, cut))


class TrimmedMeanSpec(MergeSpecBase):
    method: Literal["trimmed_mean"] = "trimmed_mean"
    trim_ratio: float = Field(default=0.1, ge=0, lt=0.5, description="cut per side")

    def build(self) -> TrimmedMean:
        return TrimmedMean(self.trim_ratio)
