"""Hypothesis properties of the merge policies (small tensors: a handful of coordinates)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from work_server.merge import SimpleAverageSpec, Update, get_policy, parse_merge_spec

ORDER_FREE = ["simple_average", "median", "trimmed_mean", "krum", "multi_krum"]

values = st.floats(-1e3, 1e3, allow_nan=False, width=32)
honest_value = st.floats(-10.0, 10.0, allow_nan=False, width=32)
huge = st.floats(1e6, 2.0**100, allow_nan=False, width=32)


def _updates(rows: list[list[float]], samples: list[int]) -> list[Update]:
    return [
        Update({"x": torch.tensor(row), "n": torch.tensor(len(row))}, n)
        for row, n in zip(rows, samples, strict=False)
    ]


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.lists(values, min_size=3, max_size=3), min_size=1, max_size=7),
    samples=st.lists(st.integers(1, 50), min_size=7, max_size=7),
    method=st.sampled_from(ORDER_FREE),
    clip=st.sampled_from([None, 50.0]),
    seed=st.integers(0, 10_000),
)
def test_permutation_invariance(
    rows: list[list[float]], samples: list[int], method: str, clip: float | None, seed: int
) -> None:
    updates = _updates(rows, samples)
    perm = torch.randperm(len(updates), generator=torch.Generator().manual_seed(seed)).tolist()
    policy = get_policy(parse_merge_spec({"method": method, "trim_ratio": 0.2, "clip_norm": clip}))
    prev = {"x": torch.zeros(3), "n": torch.tensor(0)}
    a = policy.merge(updates, prev)["x"]
    b = policy.merge([updates[i] for i in perm], prev)["x"]
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-3)


@settings(max_examples=60, deadline=None)
@given(
    honest=st.lists(st.lists(honest_value, min_size=4, max_size=4), min_size=1, max_size=8),
    outliers=st.lists(st.tuples(st.lists(huge, min_size=4, max_size=4), st.booleans()), max_size=7),
    samples=st.lists(st.integers(1, 1000), min_size=15, max_size=15),
    method=st.sampled_from(["median", "trimmed_mean"]),
)
def test_minority_outliers_stay_bounded(
    honest: list[list[float]],
    outliers: list[tuple[list[float], bool]],
    samples: list[int],
    method: str,
) -> None:
    """Fewer than half the updates arbitrary (huge, either sign): every coordinate of the median,
    and of the trimmed mean trimming at least that many per side, stays in the honest range."""
    bad = [[v if not neg else -v for v in row] for row, neg in outliers[: len(honest) - 1]]
    k = len(honest) + len(bad)
    trim_ratio = (len(bad) + 0.25) / k  # floor(trim_ratio * K) == number of outliers, < 0.5
    updates = _updates(honest + bad, samples)
    spec = parse_merge_spec({"method": method, "trim_ratio": trim_ratio})
    out = get_policy(spec).merge(updates, {})["x"]
    stacked = torch.tensor(honest)
    assert bool((out >= stacked.min(0).values - 1e-4).all())
    assert bool((out <= stacked.max(0).values + 1e-4).all())


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.lists(values, min_size=2, max_size=2), min_size=1, max_size=6),
    samples=st.lists(st.integers(1, 10_000), min_size=6, max_size=6),
)
def test_fedavg_equals_hand_computation(rows: list[list[float]], samples: list[int]) -> None:
    updates = _updates(rows, samples)
    out = get_policy(SimpleAverageSpec()).merge(updates, {})
    total = sum(u.num_samples for u in updates)
    for j in range(2):
        expected = sum(row[j] * n for row, n in zip(rows, samples, strict=False)) / total
        assert out["x"][j].item() == pytest.approx(expected, rel=1e-6, abs=1e-4)
    assert out["x"].dtype == torch.float32
