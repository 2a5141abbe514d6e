from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from work_server.merge import (
    MergePolicy,
    RegularizedSpec,
    SimpleAverageSpec,
    TrimmedMeanSpec,
    Update,
    get_policy,
    parse_merge_spec,
)
from work_server.merge.median import coordinate_median
from work_server.merge.regularized import Regularized, blend
from work_server.merge.simple_average import weighted_mean
from work_server.merge.trimmed_mean import coordinate_trimmed_mean

ALL_METHODS = ["simple_average", "median", "trimmed_mean", "regularized", "krum", "multi_krum"]


def _u(w: float, b: list[float], n: int, count: int = 0) -> Update:
    return Update(
        {
            "w": torch.tensor([[w]], dtype=torch.float32),
            "b": torch.tensor(b, dtype=torch.float32),
            "count": torch.tensor(count, dtype=torch.int64),
        },
        n,
    )


PREV = {"w": torch.zeros(1, 1), "b": torch.zeros(2), "count": torch.tensor(0)}


def test_get_policy() -> None:
    for method in ALL_METHODS:
        policy = get_policy(parse_merge_spec({"method": method}))
        assert isinstance(policy, MergePolicy)
        assert policy.name == method
    assert get_policy(TrimmedMeanSpec(trim_ratio=0.3)).trim_ratio == 0.3  # type: ignore[attr-defined]
    assert get_policy(RegularizedSpec(factor=0.25)).factor == 0.25  # type: ignore[attr-defined]


def test_fedavg_hand_computed() -> None:
    updates = [_u(1.0, [0.0, 4.0], 1, count=5), _u(4.0, [3.0, 0.0], 3, count=7)]
    out = get_policy(SimpleAverageSpec()).merge(updates, PREV)
    # (1*1 + 3*4)/4 = 3.25 ; (1*0 + 3*3)/4 = 2.25 ; (1*4 + 3*0)/4 = 1.0
    assert torch.allclose(out["w"], torch.tensor([[3.25]]))
    assert torch.allclose(out["b"], torch.tensor([2.25, 1.0]))
    assert out["w"].dtype == torch.float32
    # Non-floating tensors come from the update with the most samples.
    assert out["count"].dtype == torch.int64
    assert int(out["count"]) == 7


def test_weighted_mean_free_function() -> None:
    stacked = torch.tensor([[0.0, 10.0], [10.0, 0.0]], dtype=torch.float64)
    out = weighted_mean(stacked, torch.tensor([1.0, 4.0], dtype=torch.float64))
    assert torch.allclose(out, torch.tensor([8.0, 2.0], dtype=torch.float64))


def test_median_odd_and_even() -> None:
    odd = torch.tensor([[1.0], [100.0], [2.0]])
    assert coordinate_median(odd).item() == 2.0
    even = torch.tensor([[1.0], [100.0], [2.0], [4.0]])
    assert coordinate_median(even).item() == 3.0
    assert torch.equal(coordinate_median(even), torch.quantile(even, 0.5, dim=0))


def test_trimmed_mean_free_function() -> None:
    stacked = torch.tensor([[1.0], [2.0], [3.0], [4.0], [1000.0]])
    assert coordinate_trimmed_mean(stacked, 0.2).item() == pytest.approx(3.0)  # cut 1 each side
    assert coordinate_trimmed_mean(stacked, 0.1).item() == pytest.approx(202.0)  # cut 0
    with pytest.raises(ValueError, match=r"trim_ratio must be in \[0, 0\.5\), got 0\.5"):
        coordinate_trimmed_mean(stacked, 0.5)


@pytest.mark.parametrize("method", ["median", "trimmed_mean"])
def test_robust_to_minority_outliers(method: str) -> None:
    torch.manual_seed(0)
    honest = [Update({"w": torch.ones(3, 3) + 0.01 * torch.randn(3, 3)}, 100) for _ in range(7)]
    evil = [Update({"w": torch.full((3, 3), 1e9)}, 100), Update({"w": torch.full((3, 3), -1e9)}, 1)]
    spec = parse_merge_spec({"method": method, "trim_ratio": 0.25})
    out = get_policy(spec).merge(honest + evil, {"w": torch.zeros(3, 3)})
    assert torch.allclose(out["w"], torch.ones(3, 3), atol=0.05)
    fedavg = get_policy(SimpleAverageSpec()).merge(honest + evil, {"w": torch.zeros(3, 3)})
    assert fedavg["w"].abs().max() > 1e6


def test_regularized_formula() -> None:
    prev = {"w": torch.tensor([[10.0]]), "b": torch.tensor([0.0, 0.0]), "count": torch.tensor(0)}
    updates = [_u(1.0, [0.0, 4.0], 1, count=5), _u(4.0, [3.0, 0.0], 3, count=7)]
    out = Regularized(0.2).merge(updates, prev)
    # 0.2 * prev + 0.8 * fedavg
    assert torch.allclose(out["w"], torch.tensor([[0.2 * 10 + 0.8 * 3.25]]))
    assert torch.allclose(out["b"], torch.tensor([0.8 * 2.25, 0.8 * 1.0]))
    assert int(out["count"]) == 7
    assert torch.equal(Regularized(1.0).merge(updates, prev)["w"], prev["w"])
    assert torch.allclose(Regularized(0.0).merge(updates, prev)["w"], torch.tensor([[3.25]]))
    assert blend(torch.tensor(2.0), torch.tensor(4.0), 0.5).item() == 3.0
    with pytest.raises(ValueError, match="regularized merge needs the previous weights"):
        Regularized(0.5).merge(updates, {})


@pytest.mark.parametrize("method", ALL_METHODS)
def test_validation(method: str) -> None:
    policy = get_policy(parse_merge_spec({"method": method}))
    good = _u(1.0, [1.0, 1.0], 2)
    with pytest.raises(ValueError, match="no updates"):
        policy.merge([], PREV)
    missing = Update({"w": torch.ones(1, 1)}, 1)
    with pytest.raises(ValueError, match="names"):
        policy.merge([good, missing], PREV)
    bad_shape = _u(1.0, [1.0, 1.0, 1.0], 1)
    with pytest.raises(ValueError, match="b"):
        policy.merge([good, bad_shape], PREV)
    bad_dtype = Update({**good.weights, "w": torch.ones(1, 1, dtype=torch.float64)}, 1)
    with pytest.raises(ValueError, match="float64"):
        policy.merge([good, bad_dtype], PREV)
    with pytest.raises(ValueError, match="num_samples"):
        policy.merge([_u(1.0, [1.0, 1.0], 0)], PREV)
    with pytest.raises(ValueError, match=r"tensor names differ \(missing \['other'\]"):
        policy.merge([good], {"other": torch.zeros(1)})


def test_single_update_is_identity_for_all() -> None:
    u = _u(1.5, [2.0, -3.0], 10, count=4)
    for method in ALL_METHODS:
        spec = parse_merge_spec({"method": method, "factor": 0.0})
        out = get_policy(spec).merge([u], PREV)
        for k in u.weights:
            assert torch.equal(out[k], u.weights[k])


values = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(st.lists(values, min_size=3, max_size=3), min_size=1, max_size=6),
    samples=st.lists(st.integers(1, 50), min_size=6, max_size=6),
    method=st.sampled_from(ALL_METHODS),
    perm_seed=st.integers(0, 1000),
)
def test_permutation_invariance(
    data: list[list[float]], samples: list[int], method: str, perm_seed: int
) -> None:
    updates = [
        Update({"x": torch.tensor(row, dtype=torch.float32)}, n)
        for row, n in zip(data, samples, strict=False)
    ]
    perm = torch.randperm(len(updates), generator=torch.Generator().manual_seed(perm_seed))
    shuffled = [updates[i] for i in perm.tolist()]
    spec = parse_merge_spec({"method": method, "trim_ratio": 0.2, "factor": 0.3})
    policy = get_policy(spec)
    prev = {"x": torch.zeros(3)}
    a = policy.merge(updates, prev)["x"]
    b = policy.merge(shuffled, prev)["x"]
    assert torch.allclose(a, b, rtol=1e-6, atol=1e-4)
    # And the result lies within the coordinate-wise range of the inputs (for factor=0 parts).
    if method != "regularized":
        stacked = torch.stack([u.weights["x"] for u in updates])
        assert bool((a >= stacked.min(0).values - 1e-3).all())
        assert bool((a <= stacked.max(0).values + 1e-3).all())
