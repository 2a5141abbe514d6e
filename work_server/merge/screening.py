"""Update screening: drop implausible updates before a round is merged.

For the previous global weights ``p`` and update ``w_k``, with the delta norm
``r_k = ||w_k - p||_2`` over all floating tensors
(:func:`~work_server.merge.clipping.delta_norm`):

* an update with any non-finite value is rejected;
* when at least 3 finite updates remain, one with ``r_k > max_ratio * median_j(r_j)`` is
  rejected (the median over the finite updates; the mean of the two middle values for an even
  count). A median of 0 (most updates did not move) gives no scale, so nothing is rejected for
  its norm then.

With fewer than 3 updates there is no majority to compare with, so only non-finite ones go.
Because at least half of the updates are at or below the median and ``max_ratio >= 1``, the
norm test never rejects a majority. Screening only decides; the caller removes the updates and
records why (the round closer marks such results invalid).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

import torch

from work_server.merge.base import Update, validate_updates
from work_server.merge.clipping import delta_norm

__all__ = ["MIN_UPDATES_FOR_NORM_TEST", "screen_updates"]

#: the norm test needs a majority to compare with
MIN_UPDATES_FOR_NORM_TEST = 3


def screen_updates(
    updates: Sequence[Update], previous: Mapping[str, torch.Tensor], *, max_ratio: float
) -> tuple[list[int], list[tuple[int, str]]]:
    """``(kept indices, [(rejected index, reason)])``, both in index order (see module).

    Raises ``ValueError`` for inconsistent updates (as every policy does), empty ``previous``,
    or ``max_ratio < 1``."""
    if not (max_ratio >= 1 and math.isfinite(max_ratio)):
        raise ValueError(f"max_ratio must be a finite number >= 1, got {max_ratio}")
    if not previous:
        raise ValueError("screening needs the previous weights")
    validate_updates(updates, previous)
    norms = [delta_norm(u.weights, previous) for u in updates]
    rejected: dict[int, str] = {}
    for i, u in enumerate(updates):
        if not all(
            bool(torch.isfinite(t).all()) for t in u.weights.values() if t.is_floating_point()
        ):
            rejected[i] = "non-finite values"
        elif not math.isfinite(norms[i]):
            rejected[i] = "delta norm overflows"
    finite = [n for i, n in enumerate(norms) if i not in rejected]
    if len(finite) >= MIN_UPDATES_FOR_NORM_TEST:
        median = statistics.median(finite)
        limit = max_ratio * median
        if median > 0:
            for i, n in enumerate(norms):
                if i not in rejected and n > limit:
                    rejected[i] = (
                        f"update norm {n:.4g} exceeds {max_ratio:g} x the round's median "
                        f"{median:.4g}"
                    )
    kept = [i for i in range(len(updates)) if i not in rejected]
    return kept, sorted(rejected.items())
