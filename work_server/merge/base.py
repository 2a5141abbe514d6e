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

__all__ = [
    "MergePolicy",
    "TensorCombiner",
    "Update",
    "combine",
    "linear_combine",
    "validate_updates",
]


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


#: Elements per chunk when a coordinate-wise combiner works through a tensor: K updates x
#: CHUNK_ELEMENTS // K coordinates at a time keeps the working set near 16 Mi floats
#: (cache- and memory-friendly) whatever K is.
CHUNK_ELEMENTS = 1 << 24


def _largest(updates: Sequence[Update]) -> int:
    return max(range(len(updates)), key=lambda i: (updates[i].num_samples, -i))


def combine(
    updates: Sequence[Update],
    previous: Mapping[str, torch.Tensor],
    combiner: TensorCombiner,
) -> dict[str, torch.Tensor]:
    """Validate, then apply ``combiner`` to every floating tensor (see module docstring).

    Coordinate-wise: each tensor is processed in chunks of coordinates (at most
    ``CHUNK_ELEMENTS`` values across the K updates), so memory beyond the updates themselves
    stays bounded whatever K and P are.
    """
    updates = list(updates)  # coordinate-wise needs every update: decode each one once
    validate_updates(updates, previous)
    k = len(updates)
    samples = torch.tensor([u.num_samples for u in updates], dtype=torch.float64)
    largest = _largest(updates)
    out: dict[str, torch.Tensor] = {}
    step = max(1, CHUNK_ELEMENTS // k)
    for name, first in updates[0].weights.items():
        if not first.is_floating_point():
            out[name] = updates[largest].weights[name].detach().clone()
            continue
        flat = [u.weights[name].detach().reshape(-1) for u in updates]
        result = torch.empty(first.numel(), dtype=first.dtype)
        for start in range(0, first.numel(), step):
            stacked = torch.stack([f[start : start + step] for f in flat]).to(torch.float64)
            result[start : start + step] = combiner(stacked, samples).to(first.dtype)
        out[name] = result.reshape(first.shape)
    return out


def linear_combine(
    updates: Sequence[Update],
    previous: Mapping[str, torch.Tensor],
    coefficients: Sequence[float],
) -> dict[str, torch.Tensor]:
    """``sum_k coefficients[k] * updates[k]`` for every floating tensor, streaming.

    One pass over the updates, each read once and never stacked: memory is one float64
    accumulator per tensor, so the updates can be loaded lazily (``Sequence.__getitem__``)
    and dropped one by one. This is what makes FedAvg run near the memory-bandwidth floor.
    """
    if len(coefficients) != len(updates):
        raise ValueError("need one coefficient per update")
    if not updates:
        raise ValueError("no updates to merge")
    acc: dict[str, torch.Tensor] = {}
    template: dict[str, torch.Tensor] = {}
    best = (-1, 0)  # (num_samples, -index) of the update whose non-float tensors we keep
    for i in range(len(updates)):
        update = updates[i]  # read once: a lazy sequence decodes it here
        try:
            validate_updates([update], previous if previous else template)
        except ValueError as exc:
            raise ValueError(str(exc).replace("update 0:", f"update {i}:", 1)) from None
        if not template:
            template = {  # shapes and dtypes only (meta tensors hold no data)
                n: torch.empty(t.shape, dtype=t.dtype, device="meta")
                for n, t in update.weights.items()
            }
        if (update.num_samples, -i) > best:
            best = (update.num_samples, -i)
            keep = {
                n: t.detach().clone()
                for n, t in update.weights.items()
                if not t.is_floating_point()
            }
        for name, t in update.weights.items():
            if t.is_floating_point():
                if name not in acc:
                    acc[name] = torch.zeros(t.shape, dtype=torch.float64)
                acc[name].add_(t.detach(), alpha=float(coefficients[i]))
    return {
        name: acc[name].to(t.dtype) if t.is_floating_point() else keep[name]
        for name, t in template.items()
    }
