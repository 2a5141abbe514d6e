"""The one retry policy of a unit's transfers (download, upload, failure report)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import pytest

from volunteer_client.daemon.retry import Backoff, RetryPolicy
from volunteer_client.errors import (
    IntegrityError,
    PayloadRejected,
    ProtocolError,
    Rejected,
    TransientError,
    Unauthorized,
)

DEADLINE = 1000.0


def _attempts(
    outcomes: Iterable[BaseException | str],
) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """An attempt that raises or returns ``outcomes`` in turn, and the count of calls."""
    pending = iter(outcomes)
    calls = [0]

    async def attempt() -> str:
        calls[0] += 1
        outcome = next(pending)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return attempt, calls


def _policy(delays: list[float], *, now: float = 0.0, attempts: int = 3) -> RetryPolicy:
    async def sleep(delay: float) -> None:
        delays.append(delay)

    return RetryPolicy(
        base_s=1.0,
        cap_s=3.0,
        integrity_attempts=attempts,
        clock=lambda: now,
        sleep=sleep,
        random_fn=lambda: 1.0,
    )


async def test_transient_errors_are_retried_with_backoff_and_retry_after() -> None:
    delays: list[float] = []
    attempt, calls = _attempts(
        [
            TransientError("down"),
            TransientError("busy", retry_after=7.0),
            ProtocolError("garbled"),
            TransientError("down"),
            TransientError("down"),
            "ok",
        ]
    )
    assert await _policy(delays).run(attempt, deadline=DEADLINE, what="unit 1: upload") == "ok"
    # Retry-After does not advance the backoff; the backoff is capped at cap_s
    assert delays == [1.0, 7.0, 2.0, 3.0, 3.0]
    assert calls == [6]


async def test_transient_error_at_the_deadline_propagates_without_waiting() -> None:
    delays: list[float] = []
    attempt, calls = _attempts([TransientError("down")])
    with pytest.raises(TransientError, match="down"):
        await _policy(delays, now=DEADLINE).run(attempt, deadline=DEADLINE, what="x")
    assert delays == []
    assert calls == [1]


async def test_integrity_errors_are_retried_a_bounded_number_of_times() -> None:
    delays: list[float] = []
    bad = [IntegrityError(f"sha256 mismatch {i}", expected="a") for i in range(3)]
    attempt, calls = _attempts(bad)
    with pytest.raises(IntegrityError, match="mismatch 2"):
        # past the deadline too: integrity failures are bounded by count, not by time
        await _policy(delays, now=DEADLINE, attempts=3).run(attempt, deadline=DEADLINE, what="x")
    assert delays == [1.0, 2.0]
    assert calls == [3]


@pytest.mark.parametrize(
    "error",
    [
        Rejected(410, "gone", "no longer wanted"),
        PayloadRejected(422, "invalid_tensors", "nan"),
        Unauthorized(401, "unauthorized", "bad token"),
        ValueError("a bug"),
    ],
)
async def test_other_errors_propagate_at_once(error: Exception) -> None:
    delays: list[float] = []
    attempt, calls = _attempts([error])
    with pytest.raises(type(error)):
        await _policy(delays).run(attempt, deadline=DEADLINE, what="x")
    assert delays == []
    assert calls == [1]


async def test_each_transfer_starts_a_fresh_backoff() -> None:
    delays: list[float] = []
    policy = _policy(delays)
    for _ in range(2):
        attempt, _calls = _attempts([TransientError("down"), TransientError("down"), "ok"])
        await policy.run(attempt, deadline=DEADLINE, what="x")
    assert delays == [1.0, 2.0, 1.0, 2.0]


def test_backoff_has_full_jitter() -> None:
    values = iter([0.5, 0.0, 0.25])
    backoff = Backoff(base_s=2.0, cap_s=5.0, random_fn=lambda: next(values))
    assert [backoff.next_delay() for _ in range(3)] == [1.0, 0.0, 1.25]
    assert backoff.ceiling == 5.0
    backoff.reset()
    assert backoff.ceiling == 2.0
