"""Regularised (server-momentum-like) averaging: move only part of the way to FedAvg.

``new = factor * previous + (1 - factor) * sum_k n_k * w_k / sum_k n_k``

``factor = 0`` is plain FedAvg, ``factor = 1`` keeps the previous weights unchanged.
``previous`` must hold the same tensors as the updates. Non-floating tensors are copied
from the update with the most samples, as in every policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

import torch
from pydantic import Field

from work_server.merge.base import MergePolicy, Update
from work_server.merge.simple_average import weighted_average
from work_server.merge.spec import MergeSpecBase

__all__ = ["Regularized", "RegularizedSpec", "blend"]


def blend(previous: torch.Tensor, average: torch.Tensor, factor: float) -> torch.Tensor:
    """``factor * previous + (1 - factor) * average``, computed in float64, cast to ``average``'s
    dtype."""
    if not 0 <= factor <= 1:
        raise ValueError(f"factor must be in [0, 1], got {factor}")
    mixed = factor * previous.to(torch.float64) + (1 - factor) * average.to(torch.float64)
    return mixed.to(average.dtype)


class Regularized(MergePolicy):
    name: ClassVar[str] = "regularized"

    def __init__(self, factor: float = 0.5) -> None:
        if not 0 <= factor <= 1:
            raise ValueError(f"factor must be in [0, 1], got {factor}")
        self.factor = factor

    def merge(
        self, updates: Sequence[Update], previous: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        if not previous:
            raise ValueError("regularized merge needs the previous weights")
        average = weighted_average(updates, previous)  # validates each update, streaming
        return {
            name: blend(previous[name].detach(), avg, self.factor)
            if avg.is_floating_point()
            else avg
            for name, avg in average.items()
        }


class RegularizedSpec(MergeSpecBase):
    method: Literal["regularized"] = "regularized"
    factor: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="new = factor*previous + (1-factor)*sample-weighted average",
    )

    def build(self) -> Regularized:
        return Regularized(self.factor)
