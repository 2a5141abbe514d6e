"""Adaptive replication and quota decisions (pure functions of work_server.services.trust)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from work_server.services import trust


def test_untrusted_hosts_are_always_replicated() -> None:
    for cv in range(5):
        for draw in (0.0, 0.5, 0.999):
            assert trust.needs_replication(
                consecutive_valid=cv, threshold=5, spot_check_rate=0.0, draw=draw
            )


def test_trusted_hosts_only_on_spot_checks() -> None:
    def needs(draw: float) -> bool:
        return trust.needs_replication(
            consecutive_valid=10, threshold=10, spot_check_rate=0.1, draw=draw
        )

    assert needs(0.05)
    assert not needs(0.1)
    assert not needs(0.9)
    d = trust.decide_claim(consecutive_valid=10, threshold=10, spot_check_rate=0.1, draw=0.05)
    assert d.replicate
    assert d.trusted
    assert d.spot_check
    d = trust.decide_claim(consecutive_valid=0, threshold=10, spot_check_rate=0.1, draw=0.9)
    assert d.replicate
    assert not d.trusted
    assert not d.spot_check


@given(
    cv=st.integers(0, 100),
    threshold=st.integers(1, 100),
    rate=st.floats(0, 1),
    draw=st.floats(0, 1, exclude_max=True),
)
def test_replication_rule(cv: int, threshold: int, rate: float, draw: float) -> None:
    expected = cv < threshold or draw < rate
    assert (
        trust.needs_replication(
            consecutive_valid=cv, threshold=threshold, spot_check_rate=rate, draw=draw
        )
        == expected
    )


def test_adaptive_quorum_is_at_least_two() -> None:
    assert trust.adaptive_quorum(1) == 2
    assert trust.adaptive_quorum(3) == 3


@given(quota=st.integers(1, 10_000), maximum=st.integers(1, 10_000))
def test_quota_halves_and_doubles_within_bounds(quota: int, maximum: int) -> None:
    quota = min(quota, maximum)
    down = trust.quota_after_invalid(quota)
    assert 1 <= down <= quota
    assert down == quota // 2 or down == 1
    up = trust.quota_after_valid(down, maximum)
    assert down <= up <= maximum


def test_quota_sequence_like_boinc() -> None:
    maximum = trust.max_daily_quota(2)
    assert maximum == 2 * trust.QUOTA_PER_CPU
    q = maximum
    for _ in range(20):
        q = trust.quota_after_invalid(q)
    assert q == 1  # never below one
    steps = 0
    while q < maximum:
        q = trust.quota_after_valid(q, maximum)
        steps += 1
    assert q == maximum
    assert steps == 7


def test_quota_left_restarts_each_day() -> None:
    today = trust.day_of(1_000_000.0)
    assert trust.quota_left(daily_quota=4, used=3, day=today, today=today) == 1
    assert trust.quota_left(daily_quota=4, used=4, day=today, today=today) == 0
    assert trust.quota_left(daily_quota=4, used=4, day=today - 1, today=today) == 4
