"""The fast merge paths against straightforward references.

* median / trimmed mean (numpy sorting networks and row sorts, block by block) against a full
  sort (the reference free functions and numpy), bit-identical for the median;
* streaming FedAvg (float32 blocks folded into float64) against a float64 sum, within its
  documented error bound, and its exact float64 fallback.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from work_server.merge import MedianSpec, SimpleAverageSpec, TrimmedMeanSpec, Update, get_policy
from work_server.merge import base as merge_base
from work_server.merge.base import FOLD_EVERY, linear_combine
from work_server.merge.median import coordinate_median
from work_server.merge.select import NETWORK_MAX_K, network, sort_rows_in_place
from work_server.merge.trimmed_mean import coordinate_trimmed_mean

# Both sides of the network / row-sort switch, odd and even.
KS = [1, 2, 3, 4, 9, 10, NETWORK_MAX_K - 1, NETWORK_MAX_K, NETWORK_MAX_K + 1, 50, 101]


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of a few coordinates, so every test crosses block boundaries."""
    monkeypatch.setattr(merge_base, "BLOCK_VALUES", 64)
    monkeypatch.setattr(merge_base, "MIN_BLOCK_COLUMNS", 7)


def _stack(k: int, shape: tuple[int, ...], seed: int, dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((k, *shape), generator=gen, dtype=torch.float64)
    x[:, ..., :2] = torch.randint(-2, 3, (k, *shape[:-1], 2), generator=gen)  # ties
    return x.to(dtype)


def _updates(stacked: torch.Tensor) -> list[Update]:
    return [
        Update({"w": row.clone(), "n": torch.tensor(i)}, 1 + i % 3) for i, row in enumerate(stacked)
    ]


def _with_specials(stacked: torch.Tensor) -> torch.Tensor:
    """Columns holding NaN, +inf and -inf in various counts (NaN sorts last, as torch.sort)."""
    x = stacked.clone()
    flat = x.reshape(x.shape[0], -1)
    k = flat.shape[0]
    flat[: k // 2 + 1, 0] = math.nan  # a majority of NaN
    flat[0, 1] = math.nan
    flat[:, 2] = math.inf
    flat[k // 2 :, 3] = -math.inf
    flat[0, 4], flat[-1, 4] = math.inf, -math.inf
    return x


def test_network_sorts_like_numpy() -> None:
    rng = np.random.default_rng(0)
    for k in range(1, 41):
        assert all(i < j < k for i, j in network(k))
        block = rng.integers(-3, 4, (k, 64)).astype(np.float32)
        block[rng.random((k, 64)) < 0.1] = np.nan
        block[rng.random((k, 64)) < 0.1] = np.inf
        expected = np.sort(block, axis=0)
        sort_rows_in_place(block)
        np.testing.assert_array_equal(block, expected)


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("specials", [False, True])
def test_median_is_bit_identical_to_a_full_sort(k: int, dtype: torch.dtype, specials: bool) -> None:
    stacked = _stack(k, (3, 19), seed=k, dtype=dtype)
    if specials:
        stacked = _with_specials(stacked)
    out = get_policy(MedianSpec()).merge(_updates(stacked), {})
    reference = coordinate_median(stacked.to(torch.float64)).to(dtype)
    assert out["w"].dtype == dtype
    assert out["w"].shape == (3, 19)
    assert torch.equal(out["w"].isnan(), reference.isnan())
    assert torch.equal(out["w"].nan_to_num(), reference.nan_to_num())
    if not specials and dtype != torch.bfloat16:
        assert np.array_equal(
            out["w"].numpy(),
            np.median(stacked.numpy().astype(np.float64), axis=0).astype(stacked.numpy().dtype),
        )
    assert int(out["n"]) == max(range(k), key=lambda i: (1 + i % 3, -i))


def _sorted_trimmed_mean(stacked: torch.Tensor, cut: int) -> np.ndarray:
    ordered = np.sort(stacked.to(torch.float64).numpy(), axis=0)
    with np.errstate(invalid="ignore"):  # inf + -inf
        return np.asarray(ordered[cut : stacked.shape[0] - cut].mean(axis=0))


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.25, 0.49])
@pytest.mark.parametrize("specials", [False, True])
def test_trimmed_mean_matches_a_full_sort(k: int, ratio: float, specials: bool) -> None:
    stacked = _stack(k, (2, 23), seed=100 + k, dtype=torch.float32)
    if specials:
        stacked = _with_specials(stacked)
    out = get_policy(TrimmedMeanSpec(trim_ratio=ratio)).merge(_updates(stacked), {})["w"]
    cut = math.floor(ratio * k)
    expected = torch.from_numpy(_sorted_trimmed_mean(stacked, cut)).to(torch.float32)
    reference = coordinate_trimmed_mean(stacked.to(torch.float64), ratio).to(torch.float32)
    for ref in (expected, reference):
        assert torch.equal(out.isnan(), ref.isnan())
        # Same float64 values summed in another order, then rounded to float32: <= 1 ulp.
        assert torch.allclose(out, ref, rtol=2**-22, atol=1e-12, equal_nan=True)


def _float64_sum(updates: list[Update], coefficients: list[float]) -> tuple[np.ndarray, ...]:
    xs = np.stack([u.weights["w"].numpy().astype(np.float64) for u in updates])
    c = np.asarray(coefficients, dtype=np.float64).reshape(-1, 1, 1)
    return (xs * c).sum(axis=0), (np.abs(xs) * np.abs(c)).sum(axis=0)


U32 = 2.0**-24  # float32 unit roundoff


def _bound(exact: np.ndarray, magnitude: np.ndarray) -> np.ndarray:
    """(FOLD_EVERY + 1) float32 roundings of sum |c_k x_k| (block sums, rounded alphas), one
    float32 rounding of the result, and a little slack."""
    return np.asarray((FOLD_EVERY + 2) * U32 * magnitude + U32 * np.abs(exact))


@pytest.mark.parametrize("k", [1, 2, FOLD_EVERY - 1, FOLD_EVERY, FOLD_EVERY + 1, 70])
def test_streaming_sum_is_within_its_bound_of_float64(k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    updates = [
        Update({"w": torch.randn(5, 31, generator=gen) * 10 ** (i % 5)}, 1 + i) for i in range(k)
    ]
    total = sum(u.num_samples for u in updates)
    weights = [u.num_samples / total for u in updates]
    out = get_policy(SimpleAverageSpec()).merge(updates, {})["w"].numpy().astype(np.float64)
    exact, magnitude = _float64_sum(updates, weights)
    assert np.all(np.abs(out - exact) <= _bound(exact, magnitude))
    # Typically far inside the bound: on average about one rounding of sum |c_k x_k|.
    assert np.mean(np.abs(out - exact) / magnitude) < 2 * U32
    # Signed coefficients (Regularized-style sums), and float64 tensors (exact path).
    signed = [(-1) ** i * (i + 1) / k for i in range(k)]
    got = linear_combine(updates, {}, signed)["w"].numpy().astype(np.float64)
    exact, magnitude = _float64_sum(updates, signed)
    assert np.all(np.abs(got - exact) <= _bound(exact, magnitude))
    doubles = [Update({"w": u.weights["w"].double()}, u.num_samples) for u in updates]
    got64 = linear_combine(doubles, {}, signed)["w"].numpy()
    assert np.allclose(got64, exact, rtol=1e-12, atol=1e-12 * magnitude.max())


def test_float32_overflow_falls_back_to_float64() -> None:
    big = torch.full((4,), 3e38)
    updates = [Update({"w": big.clone()}, 1) for _ in range(3)]
    # float32 partial sum 3e38 + 3e38 overflows; the float64 total 3e38 does not.
    out = linear_combine(updates, {}, [1.0, 1.0, -1.0])["w"]
    assert torch.isfinite(out).all()
    assert torch.allclose(out, big)


def test_nan_and_inf_propagate_as_before() -> None:
    """Merges do not reject non-finite values (the upload API does, with a 400)."""
    rows = torch.tensor([[1.0, 1.0, math.inf], [2.0, math.nan, 1.0], [3.0, 1.0, -math.inf]])
    out = get_policy(SimpleAverageSpec()).merge(_updates(rows), {})["w"]
    assert out[0].item() == pytest.approx((1 * 1 + 2 * 2 + 3 * 3) / 6)
    assert out[1:].isnan().all()


def test_streaming_validation_names_the_bad_update() -> None:
    good = Update({"w": torch.ones(2, 3)}, 1)
    bad = Update({"w": torch.ones(3, 2)}, 1)
    policy = get_policy(SimpleAverageSpec())
    with pytest.raises(ValueError, match=r"update 2: w is torch.float32 \[3, 2\]"):
        policy.merge([good, good, bad], {})
    with pytest.raises(ValueError, match="update 1: num_samples"):
        linear_combine([good, Update({"w": torch.ones(2, 3)}, 0)], {}, [0.5, 0.5])
    grad = Update({"w": torch.ones(2, 3, requires_grad=True)}, 1)
    assert not policy.merge([grad, grad], {})["w"].requires_grad
