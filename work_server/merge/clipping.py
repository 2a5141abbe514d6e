"""Norm clipping of updates (as in DP-FedAvg, McMahan et al. 2018): bound each client's
influence on the merge, whatever policy merges.

For an update ``w`` and the previous global weights ``p``, the delta ``d = w - p`` is taken over
all floating tensors together (one flattened vector, in float64)::

    w' = p + d * min(1, max_norm / ||d||_2)

so the clipped delta keeps its direction and has norm at most ``max_norm`` (up to the rounding of
the cast back to each tensor's dtype). Non-floating tensors are left as they are.
:class:`Clipped` applies this to every update before its inner policy merges them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch

from work_server.merge.base import MergePolicy, Update, validate_updates

__all__ = ["Clipped", "clip_update", "delta_norm"]


def delta_norm(weights: Mapping[str, torch.Tensor], previous: Mapping[str, torch.Tensor]) -> float:
    """L2 norm of ``weights - previous`` over all floating tensors (float64); NaN/inf when the
    update is not finite. Raises ``ValueError`` when ``previous`` lacks one of the tensors."""
    total = 0.0
    for name, t in weights.items():
        if not t.is_floating_point():
            continue
        if name not in previous:
            raise ValueError(f"previous weights lack {name}")
        d = t.detach().to(torch.float64) - previous[name].detach().to(torch.float64)
        total += float((d * d).sum())
    return math.sqrt(total)


def clip_update(update: Update, previous: Mapping[str, torch.Tensor], max_norm: float) -> Update:
    """``update`` with its delta from ``previous`` scaled down to L2 norm ``max_norm`` if it is
    longer (the same object when it is not). Raises ``ValueError`` for ``max_norm <= 0`` or a
    non-finite delta."""
    if not (max_norm > 0 and math.isfinite(max_norm)):
        raise ValueError(f"max_norm must be a positive finite number, got {max_norm}")
    norm = delta_norm(update.weights, previous)
    if not math.isfinite(norm):
        raise ValueError("cannot clip an update with non-finite values")
    if norm <= max_norm:
        return update
    scale = max_norm / norm
    clipped: dict[str, torch.Tensor] = {}
    for name, t in update.weights.items():
        if t.is_floating_point():
            p = previous[name].detach().to(torch.float64)
            w = p + (t.detach().to(torch.float64) - p) * scale
            clipped[name] = w.to(t.dtype).contiguous()
        else:
            clipped[name] = t
    return Update(weights=clipped, num_samples=update.num_samples)


class Clipped(MergePolicy):
    """Clip every update (:func:`clip_update`), then merge with ``inner``."""

    name: ClassVar[str] = "clipped"

    def __init__(self, inner: MergePolicy, max_norm: float) -> None:
        if not (max_norm > 0 and math.isfinite(max_norm)):
            raise ValueError(f"max_norm must be a positive finite number, got {max_norm}")
        self.inner = inner
        self.max_norm = max_norm

    def merge(
        self, updates: Sequence[Update], previous: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        if not previous:
            raise ValueError("clipping needs the previous weights")
        validate_updates(updates, previous)
        clipped = [clip_update(u, previous, self.max_norm) for u in updates]
        return self.inner.merge(clipped, previous)
