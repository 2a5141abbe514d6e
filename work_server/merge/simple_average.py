"""FedAvg (McMahan et al. 2017): the average of the clients' weights, weighted by samples.

``new = sum_k n_k * w_k / sum_k n_k``
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch

from work_server.merge.base import MergePolicy, Update, combine

__all__ = ["SimpleAverage", "weighted_average", "weighted_mean"]


def weighted_mean(stacked: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_k weights[k] * stacked[k] / sum_k weights[k]`` over dim 0."""
    if weights.dim() != 1 or weights.shape[0] != stacked.shape[0]:
        raise ValueError("need one weight per stacked tensor")
    total = weights.sum()
    if not bool(total > 0):
        raise ValueError("weights must sum to a positive number")
    w = (weights / total).to(stacked.dtype).reshape(-1, *([1] * (stacked.dim() - 1)))
    return (stacked * w).sum(dim=0)


def weighted_average(
    updates: Sequence[Update], previous: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Sample-weighted average of the updates' floating tensors."""
    return combine(updates, previous or {}, weighted_mean)


class SimpleAverage(MergePolicy):
    name: ClassVar[str] = "simple_average"

    def merge(
        self, updates: Sequence[Update], previous: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return weighted_average(updates, previous)
