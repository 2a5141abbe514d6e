"""How the client waits before trying again: :class:`Backoff`, and the one
:class:`RetryPolicy` that every transfer of a unit goes through (input downloads, the
output upload, the failure report).

The transfers fail the same ways and must give up the same way, so the decision of what
to retry, how long to wait and when to stop lives here once; the unit lifecycle only
decides what a unit's end is once the policy gives up.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..errors import IntegrityError, TransientError, YadmlClientError

__all__ = ["Backoff", "RetryPolicy", "Sleep"]

log = logging.getLogger(__name__)

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]


class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**attempt))``."""

    def __init__(
        self,
        *,
        base_s: float = 1.0,
        cap_s: float = 60.0,
        random_fn: Callable[[], float] = random.random,
    ) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.random_fn = random_fn
        self.attempt = 0

    @property
    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        return min(self.cap_s, self.base_s * 2.0 ** min(self.attempt, 64))

    def next_delay(self) -> float:
        delay = self.ceiling * self.random_fn()
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


class RetryPolicy:
    """Runs one transfer of a unit again until it succeeds or going on is of no use.

    - :class:`TransientError` (network, 5xx, 429): tried again after the server's
      ``Retry-After``, else the next backoff delay, until the unit's deadline; from then
      on the server no longer waits for the unit, so the error propagates.
    - :class:`IntegrityError` (downloaded bytes that do not match): tried again after the
      next backoff delay, ``integrity_attempts`` tries in all, then it propagates; a
      server that keeps sending wrong bytes will not fix itself before the deadline.
    - anything else (a refusal, :class:`Unauthorized`...) propagates at once: the same
      request would be refused again.

    Each transfer starts a fresh :class:`Backoff` (``base_s``, ``cap_s``); ``sleep`` and
    ``clock`` (UNIX seconds) are injected so tests can replace them.
    """

    def __init__(
        self,
        *,
        base_s: float = 1.0,
        cap_s: float = 60.0,
        integrity_attempts: int = 3,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        random_fn: Callable[[], float] = random.random,
    ) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.integrity_attempts = integrity_attempts
        self._clock = clock
        self._sleep = sleep
        self._random = random_fn

    def backoff(self) -> Backoff:
        """A fresh backoff with this policy's settings."""
        return Backoff(base_s=self.base_s, cap_s=self.cap_s, random_fn=self._random)

    async def run(self, attempt: Callable[[], Awaitable[T]], *, deadline: float, what: str) -> T:
        """``await attempt()`` until it returns, retrying as the class docstring says.

        ``deadline`` is the unit's deadline (UNIX seconds); ``what`` names the transfer
        in log lines (``"unit 7: upload"``).
        """
        backoff = self.backoff()
        integrity_failures = 0
        while True:
            error: YadmlClientError
            try:
                return await attempt()
            except IntegrityError as exc:
                integrity_failures += 1
                if integrity_failures >= self.integrity_attempts:
                    raise
                error, delay = exc, backoff.next_delay()
            except TransientError as exc:
                if self._clock() >= deadline:
                    raise
                retry_after = exc.retry_after
                error = exc
                delay = retry_after if retry_after is not None else backoff.next_delay()
            log.warning("%s failed (%s); retrying in %.1f s", what, error, delay)
            await self._sleep(delay)
