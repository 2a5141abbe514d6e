from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from work_server.merge import (
    Krum,
    KrumSpec,
    MultiKrum,
    MultiKrumSpec,
    Update,
    get_policy,
    parse_merge_spec,
)
from work_server.merge.krum import (
    default_byzantine_f,
    flatten_updates,
    krum_scores,
    krum_select,
    resolve_byzantine_f,
)


def _u(x: float, n: int = 1, count: int = 0) -> Update:
    return Update({"x": torch.tensor([x]), "count": torch.tensor(count)}, n)


PREV = {"x": torch.zeros(1), "count": torch.tensor(0)}


def test_scores_hand_computed() -> None:
    flat = torch.tensor([[0.0], [1.0], [2.0], [10.0]], dtype=torch.float64)
    # f = 0, K = 4: each score sums the K - f - 2 = 2 nearest squared distances
    scores = krum_scores(flat, 0)
    assert scores.tolist() == [1 + 4, 1 + 1, 1 + 4, 64 + 81]
    assert krum_select(flat, 0, 1) == [1]
    assert krum_select(flat, 0, 3) == [0, 1, 2]  # 0 and 2 tie: both kept with m=2 as well
    assert krum_select(flat, 0, 2) == [0, 1, 2]


def test_flatten_uses_float_tensors_only() -> None:
    u = Update({"a": torch.ones(2, 2), "n": torch.tensor(3), "b": torch.zeros(1)}, 1)
    flat = flatten_updates([u, u])
    assert flat.shape == (2, 5)
    assert flat.dtype == torch.float64


def test_krum_needs_2f_plus_3() -> None:
    flat = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"2f\+3 = 5 updates, got 4"):
        krum_scores(flat, 1)
    with pytest.raises(ValueError, match=">= 0"):
        krum_scores(flat, -1)
    with pytest.raises(ValueError, match="m must be"):
        krum_select(flat, 0, 5)
    assert krum_scores(torch.zeros(5, 2, dtype=torch.float64), 1).tolist() == [0.0] * 5


def test_f_defaults_and_fallback() -> None:
    assert [default_byzantine_f(k) for k in range(1, 10)] == [0, 0, 0, 0, 1, 1, 2, 2, 3]
    assert resolve_byzantine_f(7, None) == 2
    assert resolve_byzantine_f(7, 1) == 1
    assert resolve_byzantine_f(7, 2) == 2
    assert resolve_byzantine_f(7, 3) == 2  # K = 7 < 2*3 + 3: falls back
    assert resolve_byzantine_f(2, 5) == 0
    with pytest.raises(ValueError, match="byzantine f must be >= 0, got -1"):
        resolve_byzantine_f(7, -1)


def test_krum_picks_the_central_update() -> None:
    updates = [_u(0.0, 5, count=1), _u(1.0, 1, count=2), _u(2.0, 1), _u(1e6, 100)]
    out = Krum().merge(updates, PREV)
    assert out["x"].tolist() == [1.0]
    assert int(out["count"]) == 2
    # a configured f that K = 4 cannot support falls back to f = 0 instead of failing
    assert Krum(byzantine_f=3).merge(updates, PREV)["x"].tolist() == [1.0]


def test_small_rounds() -> None:
    assert Krum().merge([_u(3.0)], PREV)["x"].tolist() == [3.0]
    # two updates tie: both are kept and averaged by samples
    out = Krum().merge([_u(0.0, 1), _u(4.0, 3)], PREV)
    assert out["x"].tolist() == [3.0]


def test_multi_krum_averages_the_selected() -> None:
    updates = [_u(0.0, 1), _u(1.0, 3), _u(2.0, 1), _u(1e6, 100), _u(1.5, 1)]
    # K = 5, default f = 1, default m = 4: the outlier is dropped
    out = MultiKrum().merge(updates, PREV)
    assert out["x"].item() == pytest.approx((0 + 3 + 2 + 1.5) / 6)
    # scores (f=1, 2 neighbours): 0 -> 1+2.25, 1 -> 0.25+1, 2 -> 0.25+1, 1.5 -> 0.25+0.25
    assert MultiKrum(m=1).merge(updates, PREV)["x"].item() == 1.5
    # m = 2: 1 and 2 tie for second place, so both are kept
    out = MultiKrum(m=2).merge(updates, PREV)
    assert out["x"].item() == pytest.approx((3 * 1.0 + 2.0 + 1.5) / 5)
    # m larger than K - f is lowered to K - f
    assert MultiKrum(m=50).merge(updates, PREV)["x"].item() == pytest.approx(6.5 / 6)
    with pytest.raises(ValueError, match="m must be >= 1, got 0"):
        MultiKrum(m=0)
    with pytest.raises(ValueError, match="byzantine_f must be >= 0, got -1"):
        Krum(byzantine_f=-1)


def test_get_policy_parameters() -> None:
    krum = get_policy(KrumSpec(byzantine_f=2))
    assert isinstance(krum, Krum)
    assert krum.byzantine_f == 2
    assert krum.name == "krum"
    multi = get_policy(MultiKrumSpec(multi_krum_m=3))
    assert isinstance(multi, MultiKrum)
    assert multi.m == 3
    assert multi.byzantine_f is None
    assert repr(multi) == "MultiKrum(byzantine_f=None, m=3)"
    with pytest.raises(ValidationError, match=r"multi_krum_m\n.*greater than or equal to 1"):
        MultiKrumSpec(multi_krum_m=0)
    with pytest.raises(ValidationError, match=r"byzantine_f\n.*greater than or equal to 0"):
        KrumSpec(byzantine_f=-1)


def test_mixed_dtypes_and_shapes() -> None:
    torch.manual_seed(0)
    honest = [
        Update({"w": torch.randn(2, 3) * 0.01, "b": torch.randn(3, dtype=torch.float64)}, 2)
        for _ in range(5)
    ]
    evil = Update({"w": torch.full((2, 3), 50.0), "b": torch.zeros(3, dtype=torch.float64)}, 9)
    out = Krum(byzantine_f=1).merge([*honest, evil], {})
    assert out["w"].dtype == torch.float32
    assert out["b"].dtype == torch.float64
    assert any(torch.equal(out["w"], u.weights["w"]) for u in honest)


honest_value = st.floats(-1.0, 1.0, allow_nan=False, width=32)
outlier_value = st.floats(1e4, 2.0**99, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(
    f=st.integers(0, 3),
    extra_honest=st.integers(0, 3),
    honest=st.lists(st.lists(honest_value, min_size=3, max_size=3), min_size=9, max_size=9),
    outliers=st.lists(
        st.tuples(st.lists(outlier_value, min_size=3, max_size=3), st.booleans()),
        min_size=3,
        max_size=3,
    ),
    samples=st.lists(st.integers(1, 1000), min_size=12, max_size=12),
    method=st.sampled_from(["krum", "multi_krum"]),
)
def test_never_selects_an_outlier(
    f: int,
    extra_honest: int,
    honest: list[list[float]],
    outliers: list[tuple[list[float], bool]],
    samples: list[int],
    method: str,
) -> None:
    """f outliers far from a tight honest cluster, K = 2f + 3 + extra: the result stays within
    the honest values' range (Krum returns one honest update)."""
    n_honest = f + 3 + extra_honest
    good = [torch.tensor(row) for row in honest[:n_honest]]
    bad = [(-1 if neg else 1) * torch.tensor(row) for row, neg in outliers[:f]]
    updates = [Update({"x": x}, n) for x, n in zip(good + bad, samples, strict=False)]
    out = get_policy(parse_merge_spec({"method": method, "byzantine_f": f})).merge(updates, {})["x"]
    stacked = torch.stack(good)
    assert bool((out >= stacked.min(0).values - 1e-5).all())
    assert bool((out <= stacked.max(0).values + 1e-5).all())
