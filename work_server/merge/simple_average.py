"""FedAvg (McMahan et al. 2017): the average of the clients' weights, weighted by samples.

``new = sum_k n_k * w_k / sum_k n_k``
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

import torch

from work_server.merge.base import MergePolicy, Update, linear_combine
from work_server.merge.spec import MergeSpecBase

__all__ = ["SimpleAverage", "SimpleAverageSpec", "weighted_average", "weighted_mean"]


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
    """Sample-weighted average of the updates' floating tensors, streaming (one pass, one
    float64 accumulator; see :func:`~work_server.merge.base.linear_combine`)."""
    if not updates:
        raise ValueError("no updates to merge")
    counts = [u.num_samples for u in updates]
    if any(isinstance(n, bool) or n < 1 for n in counts):
        raise ValueError("num_samples must be >= 1")
    total = float(sum(counts))
    return linear_combine(updates, previous or {}, [n / total for n in counts])


class SimpleAverage(MergePolicy):
    name: ClassVar[str] = "simple_average"

    def merge(
        self, updates: Sequence[Update], previous: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return weighted_average(updates, previous)


class SimpleAverageSpec(MergeSpecBase):
    method: Literal["simple_average"] = "simple_average"

    def build(self) -> SimpleAverage:
        return SimpleAverage()
