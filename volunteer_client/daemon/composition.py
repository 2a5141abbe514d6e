"""``Daemon``: the client's work loop composed from its parts (the poll loop, the units in
flight, the unit lifecycle, the retry policy and key learning); the CLI builds it."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence

from yadml_common.signing import WorkVerifier
from yadml_common.wire import Runtime

from ..api import ServerAPI
from ..executors.base import Executor
from ..state import StateDir
from .key_learning import KeyLearner
from .poll_loop import PollLoop
from .retry import RetryPolicy, Sleep
from .unit_lifecycle import UnitLifecycle
from .units_in_flight import UnitsInFlight

__all__ = ["Daemon"]


class Daemon:
    """Runs units for one attachment with ``executor``, against ``api``, in ``state``.

    ``sleep`` and ``clock`` (UNIX seconds) drive the backoff/polling waits and deadline
    checks, so tests can replace them; the heartbeat runs on real time every
    ``heartbeat_s``. ``backoff_base_s``/``backoff_max_s`` shape every backoff (work
    requests and transfers); ``min_poll_s``/``max_poll_s`` clamp the server's
    ``retry_after_s``; ``download_attempts`` bounds the tries of a download whose bytes do
    not match. With a ``verifier`` (the pinned project keys) only units signed by a pinned
    key run, and rotated keys they endorse are learned.
    """

    def __init__(
        self,
        *,
        api: ServerAPI,
        state: StateDir,
        executor: Executor,
        runtimes: Sequence[Runtime] | None = None,
        max_concurrent: int = 1,
        threads: int | None = None,
        heartbeat_s: float = 30.0,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        min_poll_s: float = 0.5,
        max_poll_s: float = 3600.0,
        poll_jitter: float = 0.1,
        download_attempts: int = 3,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        random_fn: Callable[[], float] = random.random,
        verifier: WorkVerifier | None = None,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        self._state = state
        retry = RetryPolicy(
            base_s=backoff_base_s,
            cap_s=backoff_max_s,
            integrity_attempts=download_attempts,
            clock=clock,
            sleep=sleep,
            random_fn=random_fn,
        )
        lifecycle = UnitLifecycle(
            api=api,
            state=state,
            executor=executor,
            retry=retry,
            max_concurrent=max_concurrent,
            threads=threads,
            clock=clock,
        )
        self.units = UnitsInFlight(state=state, lifecycle=lifecycle, verifier=verifier)
        self.poll_loop = PollLoop(
            api=api,
            units=self.units,
            runtimes=runtimes or [executor.runtime],
            backoff=retry.backoff(),
            keys=None if verifier is None else KeyLearner(api=api, verifier=verifier, state=state),
            max_concurrent=max_concurrent,
            heartbeat_s=heartbeat_s,
            min_poll_s=min_poll_s,
            max_poll_s=max_poll_s,
            poll_jitter=poll_jitter,
            sleep=sleep,
            random_fn=random_fn,
        )

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; then cancel running units (they resume next start).

        Raises :class:`PermanentError` when the server refuses this host's work requests.
        """
        self._state.ensure()
        await self.poll_loop.run_forever(stop)

    async def run_once(self) -> int:
        """One pass: finish leftover units, ask once for work, run it all to completion.

        Returns how many units left the client (uploaded, reported or dropped). Errors of
        the work request propagate.
        """
        self._state.ensure()
        return await self.poll_loop.run_once()
