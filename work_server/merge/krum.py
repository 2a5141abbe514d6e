"""Krum and Multi-Krum (Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent"): keep the updates that sit closest to the bulk of the others.

Every update ``k`` is flattened to one vector ``x_k`` (all floating tensors, float64). With K
updates of which at most ``f`` are assumed Byzantine::

    score(k) = sum of ||x_k - x_j||^2 over the K - f - 2 nearest other updates j

Krum needs ``K >= 2f + 3`` (so that every score sums at least f + 1 neighbours and an outlier's
score must include an honest point). Then:

* **Krum** keeps the update with the lowest score: ``new = w_k*``.
* **Multi-Krum** keeps the ``m`` lowest-score updates (default and at most ``m = K - f``) and
  averages them weighted by samples: ``new = sum_{k in S} n_k w_k / sum_{k in S} n_k``.

Details:

* ``f`` defaults to ``floor((K - 3) / 2)`` (clipped at 0), the most Byzantine updates K can
  tolerate. A configured ``f`` that this round's K cannot support (``K < 2f + 3``, e.g. a round
  closed early with fewer updates) is lowered to that default rather than failing the round;
  the free function :func:`krum_scores` itself raises ``ValueError`` instead.
* With fewer than 3 updates no Byzantine tolerance is possible: ``f = 0`` and every other
  update is a neighbour (K = 1 keeps it; K = 2 ties, see next point).
* Ties: every update scoring exactly the same as the last one selected is kept too, so the
  result does not depend on the order of the updates (Krum with two tied updates averages them).
* Sample counts do not influence the selection (one vote per update), only the averaging.
* Cost: O(K^2 P) time (each pair once, in cache-sized column blocks) and O(K P) memory.
* Non-floating tensors follow the common rule (the selected update with the most samples).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field

from work_server.merge.base import MergePolicy, Update, combine, validate_updates
from work_server.merge.simple_average import weighted_mean
from work_server.merge.spec import MergeSpecBase

__all__ = [
    "Krum",
    "KrumSpec",
    "MultiKrum",
    "MultiKrumSpec",
    "default_byzantine_f",
    "flatten_updates",
    "krum_scores",
    "krum_select",
    "resolve_byzantine_f",
]

log = logging.getLogger(__name__)


def default_byzantine_f(k: int) -> int:
    """``floor((K - 3) / 2)`` clipped at 0: the most Byzantine updates Krum tolerates among K."""
    return max(0, (k - 3) // 2)


def resolve_byzantine_f(k: int, requested: int | None) -> int:
    """The ``f`` used for K updates: ``requested`` when K supports it, else (and by default)
    :func:`default_byzantine_f`."""
    if requested is None:
        return default_byzantine_f(k)
    if requested < 0:
        raise ValueError(f"byzantine f must be >= 0, got {requested}")
    if k < 2 * requested + 3 and requested > default_byzantine_f(k):
        fallback = default_byzantine_f(k)
        log.warning(
            "krum: %d updates cannot tolerate f=%d (needs K >= 2f+3); using f=%d",
            k,
            requested,
            fallback,
        )
        return fallback
    return requested


def flatten_updates(updates: Sequence[Update]) -> torch.Tensor:
    """``[K, P]`` float64: each update's floating tensors flattened and concatenated (in the
    first update's name order)."""
    names = [n for n, t in updates[0].weights.items() if t.is_floating_point()]
    rows = [
        torch.cat([u.weights[n].detach().to(torch.float64).reshape(-1) for n in names])
        if names
        else torch.zeros(0, dtype=torch.float64)
        for u in updates
    ]
    return torch.stack(rows)


def krum_scores(flat: torch.Tensor, f: int) -> torch.Tensor:
    """Krum score of every row of ``flat`` ``[K, P]``: the sum of squared distances to its
    ``K - f - 2`` nearest other rows (all other rows when K < 3 and f = 0).

    Raises ``ValueError`` when ``f < 0`` or K cannot tolerate f (``K < 2f + 3``, f > 0)."""
    if flat.dim() != 2:
        raise ValueError("need a [K, P] tensor")
    k = flat.shape[0]
    if k == 0:
        raise ValueError("no updates")
    if f < 0:
        raise ValueError(f"byzantine f must be >= 0, got {f}")
    if k < 2 * f + 3 and f > 0:
        raise ValueError(f"Krum with f={f} needs at least 2f+3 = {2 * f + 3} updates, got {k}")
    neighbours = k - f - 2 if k >= 3 else k - 1
    dist = _pairwise_sq_distances(flat)
    scores = torch.empty(k, dtype=torch.float64)
    for i in range(k):
        others = torch.cat([dist[i, :i], dist[i, i + 1 :]])
        scores[i] = torch.sort(others).values[:neighbours].sum()
    return scores


#: Values (float64) per block of columns in :func:`_pairwise_sq_distances`: ~1 MiB, in cache.
DISTANCE_BLOCK_VALUES = 1 << 17


def _pairwise_sq_distances(flat: torch.Tensor) -> torch.Tensor:
    """``[K, K]`` squared Euclidean distances between the rows of ``flat`` ``[K, P]``.

    Not via a Gram matrix: every distance is the same sum of ``(x_j - x_i)^2`` over the same
    column blocks, reduced as one row of the same ``[K, block]`` shape whatever the order of
    the rows (and ``(a - b)^2 == (b - a)^2`` exactly), so equal scores stay exactly equal under
    permutation. Block by block of columns, so the K rows stay in cache.
    """
    k, p = flat.shape
    dist = torch.zeros(k, k, dtype=torch.float64)
    step = max(1, DISTANCE_BLOCK_VALUES // k)
    for start in range(0, p, step):
        block = flat[:, start : start + step].contiguous()
        diff = torch.empty_like(block)
        for i in range(k):
            torch.sub(block, block[i], out=diff)
            diff.square_()
            dist[i] += diff.sum(dim=1)
    return dist


def krum_select(flat: torch.Tensor, f: int, m: int) -> list[int]:
    """Indices (ascending) of the ``m`` lowest-score rows, plus any tying with the m-th."""
    k = flat.shape[0]
    if not 1 <= m <= k:
        raise ValueError(f"m must be in [1, {k}], got {m}")
    scores = krum_scores(flat, f)
    threshold = torch.sort(scores).values[m - 1]
    if not bool(torch.isfinite(threshold)):
        raise ValueError("Krum scores are not finite (non-finite or overflowing updates)")
    return [i for i in range(k) if bool(scores[i] <= threshold)]


def _multi_krum(
    updates: Sequence[Update],
    previous: Mapping[str, torch.Tensor],
    f: int | None,
    m: int | None,
) -> dict[str, torch.Tensor]:
    validate_updates(updates, previous)
    k = len(updates)
    f_used = resolve_byzantine_f(k, f)
    m_max = k - f_used
    m_used = m_max if m is None else min(m, m_max)
    selected = krum_select(flatten_updates(updates), f_used, m_used)
    return combine([updates[i] for i in selected], previous, weighted_mean)


class Krum(MergePolicy):
    name: ClassVar[str] = "krum"

    def __init__(self, byzantine_f: int | None = None) -> None:
        if byzantine_f is not None and byzantine_f < 0:
            raise ValueError(f"byzantine_f must be >= 0, got {byzantine_f}")
        self.byzantine_f = byzantine_f

    def merge(
        self, updates: Sequence[Update], previous: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return _multi_krum(updates, previous, self.byzantine_f, 1)


class MultiKrum(MergePolicy):
    name: ClassVar[str] = "multi_krum"

    def __init__(self, byzantine_f: int | None = None, m: int | None = None) -> None:
        if byzantine_f is not None and byzantine_f < 0:
            raise ValueError(f"byzantine_f must be >= 0, got {byzantine_f}")
        if m is not None and m < 1:
            raise ValueError(f"m must be >= 1, got {m}")
        self.byzantine_f = byzantine_f
        self.m = m

    def merge(
        self, updates: Sequence[Update], previous: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return _multi_krum(updates, previous, self.byzantine_f, self.m)


#: ``f`` of both specs; None: :func:`default_byzantine_f` of each round's K
ByzantineF = Annotated[
    int | None,
    Field(
        ge=0,
        le=498,
        description="assumed Byzantine updates per round; default floor((K-3)/2) for K "
        "updates; lowered to that when a round has too few updates",
    ),
]


class KrumSpec(MergeSpecBase):
    method: Literal["krum"] = "krum"
    byzantine_f: ByzantineF = None

    def build(self) -> Krum:
        return Krum(self.byzantine_f)


class MultiKrumSpec(MergeSpecBase):
    method: Literal["multi_krum"] = "multi_krum"
    byzantine_f: ByzantineF = None
    multi_krum_m: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="how many lowest-score updates are averaged; default and at most K - f",
    )

    def build(self) -> MultiKrum:
        return MultiKrum(self.byzantine_f, self.multi_krum_m)
