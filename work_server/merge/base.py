"""Merge policies (Flower-style strategies): combine the clients' weights of one round.

A policy is a small object with one method, :meth:`MergePolicy.merge`; the tensor math lives
in pure free functions next to each policy so it can be tested on its own.

Common rules, shared by every policy through :func:`combine`:

* ``updates`` must be non-empty, every update must hold the same tensor names with the same
  shapes and dtypes (and the same as ``previous`` when ``previous`` is non-empty), and
  ``num_samples >= 1``; otherwise ``ValueError``.
* Floating-point tensors are combined by the policy, in float64, then cast back to their dtype.
* Non-floating tensors (e.g. BatchNorm's ``num_batches_tracked``) are copied from the update
  with the most samples (the first such update on ties).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

__all__ = ["MergePolicy", "TensorCombiner", "Update", "combine", "validate_updates"]


@dataclass(frozen=True)
class Update:
    """One client's trained weights and the number of samples it trained on."""

    weights: dict[str, torch.Tensor]
    num_samples: int


#: Combines K same-shaped float64 tensors (stacked on dim 0, shape ``[K, ...]``) into one,
#: given the K sample counts.
TensorCombiner = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class MergePolicy(ABC):
    name: ClassVar[str]

    @abstractmethod
    def merge(
        self, updates: Sequence[Update], previous: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The new global weights from this round's ``updates`` and the ``previous`` ones."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


def validate_updates(updates: Sequence[Update], previous: Mapping[str, torch.Tensor]) -> None:
    """Raise ``ValueError`` unless the updates are non-empty and mutually consistent."""
    if not updates:
        raise ValueError("no updates to merge")
    reference: Mapping[str, torch.Tensor] = previous if previous else updates[0].weights
    ref_names = set(reference)
    if not ref_names:
        raise ValueError("updates hold no tensors")
    for i, update in enumerate(updates):
        if isinstance(update.num_samples, bool) or update.num_samples < 1:
            raise ValueError(f"update {i}: num_samples must be >= 1, got {update.num_samples}")
        names = set(update.weights)
        if names != ref_names:
            missing = sorted(ref_names - names)
            extra = sorted(names - ref_names)
            raise ValueError(f"update {i}: tensor names differ (missing {missing}, extra {extra})")
        for name, ref in reference.items():
            t = update.weights[name]
            if t.shape != ref.shape or t.dtype != ref.dtype:
                raise ValueError(
                    f"update {i}: {name} is {t.dtype} {list(t.shape)}, "
                    f"expected {ref.dtype} {list(ref.shape)}"
                )


def combine(
    updates: Sequence[Update],
    previous: Mapping[str, torch.Tensor],
    combiner: TensorCombiner,
) -> dict[str, torch.Tensor]:
    """Validate, then apply ``combiner`` to every floating tensor (see module docstring)."""
    validate_updates(updates, previous)
    samples = torch.tensor([u.num_samples for u in updates], dtype=torch.float64)
    largest = max(range(len(updates)), key=lambda i: (updates[i].num_samples, -i))
    out: dict[str, torch.Tensor] = {}
    for name, first in updates[0].weights.items():
        if first.is_floating_point():
            stacked = torch.stack([u.weights[name].detach().to(torch.float64) for u in updates])
            out[name] = combiner(stacked, samples).to(first.dtype).contiguous()
        else:
            out[name] = updates[largest].weights[name].detach().clone()
    return out
