"""Merge policies (Flower-style strategies): combine the clients' weights of one round.

A policy is a small object with one method, :meth:`MergePolicy.merge`; the tensor math lives
in pure free functions next to each policy so it can be tested on its own.

Common rules, shared by every policy through :func:`combine`, :func:`coordinate_wise` and
:func:`linear_combine`:

* ``updates`` must be non-empty, every update must hold the same tensor names with the same
  shapes and dtypes (and the same as ``previous`` when ``previous`` is non-empty), and
  ``num_samples >= 1``; otherwise ``ValueError``.
* Floating-point tensors are combined by the policy, then cast back to their dtype. Linear
  policies sum float32 partial sums of at most :data:`FOLD_EVERY` updates into float64
  (:func:`linear_combine`); order statistics select values in the tensors' own dtype and
  average the selected ones in float64 (:func:`coordinate_wise`); :func:`combine` stacks in
  float64.
* Non-floating tensors (e.g. BatchNorm's ``num_batches_tracked``) are copied from the update
  with the most samples (the first such update on ties).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import torch

__all__ = [
    "BlockReducer",
    "MergePolicy",
    "TensorCombiner",
    "Update",
    "combine",
    "coordinate_wise",
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


#: Values per block of a coordinate-wise merge (K updates x n coordinates): the float32 block
#: and its transpose stay in L2 cache; at least MIN_BLOCK_COLUMNS coordinates, so the K row
#: copies per block stay cheap when K is large.
BLOCK_VALUES = 1 << 18
MIN_BLOCK_COLUMNS = 1024

#: Reduces a ``[K, n]`` numpy block (K updates, n coordinates; it may destroy it) to ``[n]``.
BlockReducer = Callable[[npt.NDArray[np.floating]], npt.NDArray[np.floating]]


def coordinate_wise(
    updates: Sequence[Update],
    previous: Mapping[str, torch.Tensor],
    reduce_block: BlockReducer,
) -> dict[str, torch.Tensor]:
    """Validate, then apply ``reduce_block`` to every floating tensor, block by block.

    Like :func:`combine`, but the blocks are numpy arrays in the tensors' own dtype (float32
    and float64; other floating dtypes are widened to float32, exactly) instead of float64
    stacks: order statistics only select values, so they need no widening, and numpy's SIMD
    sorts are much faster than ``torch.sort(dim=0)``. Memory beyond the updates: two blocks.
    """
    updates = list(updates)  # coordinate-wise needs every update: decode each one once
    validate_updates(updates, previous)
    k = len(updates)
    largest = _largest(updates)
    columns = max(MIN_BLOCK_COLUMNS, BLOCK_VALUES // k)
    out: dict[str, torch.Tensor] = {}
    for name, first in updates[0].weights.items():
        if not first.is_floating_point():
            out[name] = updates[largest].weights[name].detach().clone()
            continue
        work = first.dtype if first.dtype in (torch.float32, torch.float64) else torch.float32
        flat = [u.weights[name].detach().reshape(-1).to(work).numpy() for u in updates]
        size = first.numel()
        result = torch.empty(size, dtype=first.dtype)
        block = np.empty((k, min(columns, size)), dtype=flat[0].dtype)
        for start in range(0, size, columns):
            stop = min(size, start + columns)
            view = block[:, : stop - start]
            for row, values in zip(view, flat, strict=True):
                row[...] = values[start:stop]
            result[start:stop] = torch.from_numpy(reduce_block(view)).to(first.dtype)
        out[name] = result.reshape(first.shape)
    return out


def _check(update: Update, i: int, reference: Mapping[str, torch.Tensor]) -> None:
    try:
        validate_updates([update], reference)
    except ValueError as exc:
        raise ValueError(str(exc).replace("update 0:", f"update {i}:", 1)) from None


def _signature(weights: Mapping[str, torch.Tensor]) -> list[tuple[str, torch.Size, torch.dtype]]:
    return [(n, t.shape, t.dtype) for n, t in weights.items()]


#: A streaming sum adds float32 tensors into a float32 accumulator and folds it into the
#: float64 total every FOLD_EVERY updates: the float32 pass runs at memory speed (mixed
#: float64 += float32 is ~3x slower), and the error stays within (FOLD_EVERY + 1) float32
#: roundings of ``sum_k |coefficients[k] * updates[k]|`` (tested against float64).
FOLD_EVERY = 16


@torch.no_grad()  # in-place sums of updates that may require grad; cheaper than detach()
def _accumulate(
    updates: Sequence[Update],
    previous: Mapping[str, torch.Tensor],
    coefficients: Sequence[float],
    fold_every: int | None,
) -> dict[str, torch.Tensor]:
    """One pass of :func:`linear_combine`; ``fold_every=None`` sums everything in float64."""
    template: dict[str, torch.Tensor] = {}
    signature: list[tuple[str, torch.Size, torch.dtype]] = []
    blocked: list[str] = []  # float32 tensors: float32 block sums, folded into float64
    direct: list[str] = []  # other floating tensors: straight into float64
    acc: dict[str, torch.Tensor] = {}  # float64 totals (of ``blocked`` from the first fold on)
    part: list[torch.Tensor] = []  # the current block's float32 sums of ``blocked``
    keep: dict[str, torch.Tensor] = {}
    best = (-1, 0)  # (num_samples, -index) of the update whose non-float tensors we keep
    pending = 0
    k = len(updates)
    for i in range(k):
        update = updates[i]  # read once: a lazy sequence decodes it here
        n = update.num_samples
        if isinstance(n, bool) or n < 1 or _signature(update.weights) != signature:
            _check(update, i, previous if previous else template)
        if not template:
            template = {  # shapes and dtypes only (meta tensors hold no data)
                name: torch.empty(t.shape, dtype=t.dtype, device="meta")
                for name, t in update.weights.items()
            }
            signature = _signature(update.weights)
            floats = [name for name, t in template.items() if t.is_floating_point()]
            blocked = [x for x in floats if fold_every and template[x].dtype == torch.float32]
            direct = [x for x in floats if x not in blocked]
            acc = {x: torch.zeros(template[x].shape, dtype=torch.float64) for x in direct}
            part = [torch.empty(template[x].shape, dtype=torch.float32) for x in blocked]
        if (n, -i) > best:
            best = (n, -i)
            keep = {
                name: t.detach().clone()
                for name, t in update.weights.items()
                if not t.is_floating_point()
            }
        w = update.weights
        alpha = float(coefficients[i])
        if blocked and pending == 0:  # a block starts: write instead of zero + add
            for dst, x in zip(part, blocked, strict=True):
                torch.mul(w[x], alpha, out=dst)
        elif blocked:
            torch._foreach_add_(part, [w[x] for x in blocked], alpha=alpha)
        for x in direct:
            acc[x].add_(w[x], alpha=alpha)
        pending += 1
        last = i == k - 1
        if blocked and (pending == fold_every or last):
            if not (last and blocked[0] not in acc):  # one block alone needs no float64
                _fold(acc, blocked, part)
            pending = 0
    return {
        name: (acc[name] if name in acc else part[blocked.index(name)]).to(t.dtype)
        if t.is_floating_point()
        else keep[name]
        for name, t in template.items()
    }


def _fold(acc: dict[str, torch.Tensor], names: list[str], part: list[torch.Tensor]) -> None:
    """``acc[names] += part`` in float64; the first fold is a copy (float32 -> float64 is exact)."""
    if names[0] in acc:
        torch._foreach_add_([acc[x] for x in names], part)
    else:
        acc.update({x: p.to(torch.float64) for x, p in zip(names, part, strict=True)})


def linear_combine(
    updates: Sequence[Update],
    previous: Mapping[str, torch.Tensor],
    coefficients: Sequence[float],
) -> dict[str, torch.Tensor]:
    """``sum_k coefficients[k] * updates[k]`` for every floating tensor, streaming.

    One pass over the updates, each read once and never stacked: memory is one float64
    accumulator (plus a float32 one, see :data:`FOLD_EVERY`) per tensor, so the updates can be
    loaded lazily (``Sequence.__getitem__``) and dropped one by one. This is what makes FedAvg
    run near the memory-bandwidth floor. Should the float32 partial sums overflow (or the
    updates hold NaN/inf), the result is recomputed in float64 throughout: a second pass.
    """
    if len(coefficients) != len(updates):
        raise ValueError("need one coefficient per update")
    if not updates:
        raise ValueError("no updates to merge")
    out = _accumulate(updates, previous, coefficients, FOLD_EVERY)
    if all(bool(torch.isfinite(t).all()) for t in out.values() if t.is_floating_point()):
        return out
    return _accumulate(updates, previous, coefficients, None)
