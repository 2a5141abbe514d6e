from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from work_server.merge import SimpleAverageSpec, Update, screen_updates

PREV = {"x": torch.zeros(2), "count": torch.tensor(0)}


def _u(*x: float) -> Update:
    return Update({"x": torch.tensor(x), "count": torch.tensor(1)}, 1)


def test_norm_outlier_rejected_with_reason() -> None:
    updates = [_u(1.0, 0.0), _u(0.0, 2.0), _u(100.0, 0.0), _u(0.0, 1.5)]
    # norms 1, 2, 100, 1.5: median 1.75, limit 17.5
    kept, rejected = screen_updates(updates, PREV, max_ratio=10.0)
    assert kept == [0, 1, 3]
    ((index, reason),) = rejected
    assert index == 2
    assert "100" in reason
    assert "1.75" in reason
    # a looser ratio keeps it
    assert screen_updates(updates, PREV, max_ratio=100.0) == ([0, 1, 2, 3], [])


def test_non_finite_rejected_and_ignored_by_the_median() -> None:
    updates = [_u(1.0, 0.0), _u(math.nan, 0.0), _u(0.0, 1.0), _u(math.inf, 0.0), _u(5.0, 0.0)]
    kept, rejected = screen_updates(updates, PREV, max_ratio=2.0)
    # finite norms 1, 1, 5: median 1, limit 2
    assert kept == [0, 2]
    assert rejected[0] == (1, "non-finite values")
    assert rejected[1] == (3, "non-finite values")
    assert rejected[2][0] == 4
    big = Update({"x": torch.tensor([1e200, 0.0], dtype=torch.float64)}, 1)
    prev64 = {"x": torch.zeros(2, dtype=torch.float64)}
    ok = Update({"x": torch.tensor([1.0, 0.0], dtype=torch.float64)}, 1)
    assert screen_updates([ok, big], prev64, max_ratio=1.0) == ([0], [(1, "delta norm overflows")])


def test_fewer_than_three_updates_skip_the_norm_test() -> None:
    assert screen_updates([_u(1.0, 0.0), _u(1e6, 0.0)], PREV, max_ratio=1.0) == ([0, 1], [])
    kept, rejected = screen_updates(
        [_u(1.0, 0.0), _u(1e6, 0.0), _u(math.nan, 0.0)], PREV, max_ratio=1.0
    )
    assert kept == [0, 1]
    assert [i for i, _ in rejected] == [2]


def test_zero_median_rejects_nothing() -> None:
    updates = [_u(0.0, 0.0), _u(0.0, 0.0), _u(3.0, 0.0)]
    assert screen_updates(updates, PREV, max_ratio=1.0) == ([0, 1, 2], [])


def test_even_count_median_and_ratio_one() -> None:
    updates = [_u(1.0, 0.0), _u(2.0, 0.0), _u(3.0, 0.0), _u(4.0, 0.0)]
    # median 2.5: with ratio 1 everything above the median goes, never a majority
    kept, rejected = screen_updates(updates, PREV, max_ratio=1.0)
    assert kept == [0, 1]
    assert [i for i, _ in rejected] == [2, 3]


def test_errors() -> None:
    with pytest.raises(ValueError, match="max_ratio"):
        screen_updates([_u(1.0, 0.0)], PREV, max_ratio=0.5)
    with pytest.raises(ValueError, match="previous"):
        screen_updates([_u(1.0, 0.0)], {}, max_ratio=2.0)
    with pytest.raises(ValueError, match="no updates"):
        screen_updates([], PREV, max_ratio=2.0)
    with pytest.raises(ValueError, match="names"):
        screen_updates([Update({"y": torch.zeros(2)}, 1)], PREV, max_ratio=2.0)


def test_spec_field() -> None:
    assert SimpleAverageSpec().screen_norm_ratio is None
    assert SimpleAverageSpec(screen_norm_ratio=3.0).screen_norm_ratio == 3.0
    for bad in (0.5, math.inf, math.nan):
        with pytest.raises(ValidationError):
            SimpleAverageSpec(screen_norm_ratio=bad)
