from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from work_server.merge import (
    Clipped,
    MedianSpec,
    SimpleAverage,
    SimpleAverageSpec,
    Update,
    get_policy,
)
from work_server.merge.clipping import clip_update, delta_norm

PREV = {"w": torch.zeros(1), "b": torch.ones(1), "count": torch.tensor(0)}


def _u(w: float, b: float, n: int = 1, count: int = 7) -> Update:
    return Update({"w": torch.tensor([w]), "b": torch.tensor([b]), "count": torch.tensor(count)}, n)


def test_clip_hand_computed() -> None:
    u = _u(3.0, 5.0)  # delta (3, 4) over both tensors: norm 5
    assert delta_norm(u.weights, PREV) == 5.0
    out = clip_update(u, PREV, 1.0)
    assert out.weights["w"].item() == pytest.approx(0.6)
    assert out.weights["b"].item() == pytest.approx(1.0 + 0.8)
    assert out.weights["w"].dtype == torch.float32
    assert int(out.weights["count"]) == 7
    assert out.num_samples == 1
    assert clip_update(u, PREV, 5.0) is u  # within the bound: untouched
    assert clip_update(u, PREV, 10.0) is u


def test_clip_errors() -> None:
    u = _u(3.0, 5.0)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="max_norm"):
            clip_update(u, PREV, bad)
    with pytest.raises(ValueError, match="non-finite"):
        clip_update(_u(math.nan, 1.0), PREV, 1.0)
    with pytest.raises(ValueError, match="lack"):
        clip_update(u, {"w": torch.zeros(1)}, 1.0)


def test_clipped_policy() -> None:
    assert isinstance(get_policy(SimpleAverageSpec()), SimpleAverage)
    policy = get_policy(MedianSpec(clip_norm=2.0))
    assert isinstance(policy, Clipped)
    assert policy.max_norm == 2.0
    assert repr(policy) == "Clipped(inner=Median(), max_norm=2.0)"
    # FedAvg of (0.6, 1.8) [clipped from (3, 5)] and (0.5, 1.0) [norm 0.5, kept], samples 1:3
    out = get_policy(SimpleAverageSpec(clip_norm=1.0)).merge(
        [_u(3.0, 5.0, 1), _u(0.5, 1.0, 3)], PREV
    )
    assert out["w"].item() == pytest.approx((0.6 + 3 * 0.5) / 4)
    assert out["b"].item() == pytest.approx((1.8 + 3 * 1.0) / 4)
    with pytest.raises(ValueError, match="previous"):
        policy.merge([_u(1.0, 1.0)], {})
    with pytest.raises(ValueError, match="no updates"):
        policy.merge([], PREV)
    with pytest.raises(ValueError, match=r"max_norm must be a positive finite number, got 0\.0"):
        Clipped(SimpleAverage(), 0.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_spec_rejects_bad_clip_norm(bad: float) -> None:
    with pytest.raises(ValidationError):
        SimpleAverageSpec(clip_norm=bad)


values = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    w=st.lists(values, min_size=4, max_size=4),
    b=st.lists(values, min_size=2, max_size=2),
    prev_w=st.lists(values, min_size=4, max_size=4),
    max_norm=st.floats(1e-3, 1e4),
)
def test_clipping_preserves_direction_and_bounds_norm(
    w: list[float], b: list[float], prev_w: list[float], max_norm: float
) -> None:
    previous = {"w": torch.tensor(prev_w).reshape(2, 2), "b": torch.zeros(2, dtype=torch.float64)}
    update = Update(
        {"w": torch.tensor(w).reshape(2, 2), "b": torch.tensor(b, dtype=torch.float64)}, 1
    )
    before = torch.cat(
        [(update.weights[k].double() - previous[k].double()).reshape(-1) for k in ("w", "b")]
    )
    clipped = clip_update(update, previous, max_norm)
    after = torch.cat(
        [(clipped.weights[k].double() - previous[k].double()).reshape(-1) for k in ("w", "b")]
    )
    norm_before = float(before.norm())
    # float32 rounding of the clipped weights (up to ~1e4 in size) is the only slack
    slack = 5e-3
    assert float(after.norm()) <= max_norm + slack
    assert float(after.norm()) == pytest.approx(min(norm_before, max_norm), abs=slack)
    if float(after.norm()) > 10.0:
        cosine = float(before @ after) / (norm_before * float(after.norm()))
        assert cosine == pytest.approx(1.0, abs=1e-6)
    assert clipped.weights["w"].dtype == torch.float32
