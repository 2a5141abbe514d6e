"""The poll loop: ask the server for work while there are free slots, pace the requests
the way the server asks, and send heartbeats.

Waiting follows the server: no work -> sleep its ``retry_after_s`` (clamped, with
jitter); unreachable or 5xx -> exponential backoff with full jitter; 429 -> its
``Retry-After``. A refusal of the work request (:class:`PermanentError`: the token is
revoked, the host banned...) is fatal: it propagates. A heartbeat reports the progress
of the units in flight every ``heartbeat_s`` of real time and aborts those the server
lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Sequence

from yadml_common.wire import Runtime, WorkUnitAssignment

from ..api import ServerAPI
from ..errors import PermanentError, TransientError
from .key_learning import KeyLearner
from .retry import Backoff, Sleep
from .units_in_flight import UnitsInFlight

__all__ = ["PollLoop"]

log = logging.getLogger(__name__)


class PollLoop:
    """Keeps ``units`` fed with work from ``api`` (see the module docstring).

    ``backoff`` paces requests while the server is unreachable (reset by an answer);
    ``min_poll_s``/``max_poll_s`` clamp the server's ``retry_after_s``, and
    ``poll_jitter`` spreads it by +-that fraction. ``keys`` (None: units are not
    signature-checked) learns rotated project keys before new units are started.
    """

    def __init__(
        self,
        *,
        api: ServerAPI,
        units: UnitsInFlight,
        runtimes: Sequence[Runtime],
        backoff: Backoff,
        keys: KeyLearner | None = None,
        max_concurrent: int = 1,
        heartbeat_s: float = 30.0,
        min_poll_s: float = 0.5,
        max_poll_s: float = 3600.0,
        poll_jitter: float = 0.1,
        sleep: Sleep = asyncio.sleep,
        random_fn: Callable[[], float] = random.random,
    ) -> None:
        self._api = api
        self._units = units
        self._runtimes = list(runtimes)
        self._backoff = backoff
        self._keys = keys
        self._max_concurrent = max_concurrent
        self._heartbeat_s = heartbeat_s
        self._min_poll_s = min_poll_s
        self._max_poll_s = max_poll_s
        self._poll_jitter = poll_jitter
        self._sleep = sleep
        self._random = random_fn

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; then cancel running units (they resume next start)."""
        async with self._heartbeats():
            try:
                self._units.resume_leftovers()
                while not stop.is_set():
                    free = self._max_concurrent - len(self._units)
                    if free <= 0:
                        await self._wait_for_slot(stop)
                        continue
                    delay = await self._ask_for_work(free)
                    if delay is not None:
                        await self._wait(delay, stop)
            finally:
                await self._units.cancel_all()
        log.info("stopped")

    async def run_once(self) -> int:
        """One pass: finish leftover units, ask once for work, run it all to completion.

        Returns how many units left the client. Errors of the work request propagate.
        """
        before = self._units.handled
        async with self._heartbeats():
            try:
                self._units.resume_leftovers()
                free = self._max_concurrent - len(self._units)
                if free > 0:
                    response = await self._api.request_work(free, self._runtimes)
                    await self._accept(response.units)
                await self._units.wait_all()
            finally:
                await self._units.cancel_all()
        return self._units.handled - before

    def poll_delay(self, retry_after_s: float) -> float:
        """The server's hint clamped to the poll bounds, with +-``poll_jitter`` jitter."""
        base = min(self._max_poll_s, max(self._min_poll_s, retry_after_s))
        return base * (1.0 + self._poll_jitter * (2.0 * self._random() - 1.0))

    async def heartbeat_once(self) -> list[int]:
        """Send one heartbeat; abort what the server lists. Returns the aborted ids."""
        try:
            response = await self._api.heartbeat(self._units.running())
        except (TransientError, PermanentError) as exc:
            log.warning("heartbeat failed: %s", exc)
            return []
        for rid in response.abort:
            await self._units.abort(rid)
        return list(response.abort)

    # ------------------------------------------------------------------ asking

    async def _ask_for_work(self, free: int) -> float | None:
        """Request up to ``free`` units; how long to wait before asking again (None: now)."""
        try:
            response = await self._api.request_work(free, self._runtimes)
        except TransientError as exc:
            retry_after = exc.retry_after
            delay = retry_after if retry_after is not None else self._backoff.next_delay()
            log.warning("work request failed (%s); retrying in %.1f s", exc, delay)
            return delay
        self._backoff.reset()
        await self._accept(response.units)
        if len(response.units) >= free:
            return None
        delay = self.poll_delay(response.retry_after_s)
        if not response.units:
            log.info("no work; asking again in %.1f s", delay)
        return delay

    async def _accept(self, assignments: Sequence[WorkUnitAssignment]) -> None:
        if self._keys is not None:
            await self._keys.learn_for(assignments)
        self._units.start_all(assignments)

    # ------------------------------------------------------------------ waiting

    async def _wait(self, delay: float, stop: asyncio.Event) -> None:
        """``sleep(delay)``, cut short by ``stop``."""
        if delay <= 0 or stop.is_set():
            return
        sleeper = asyncio.ensure_future(self._sleep(delay))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (sleeper, stopper):
                fut.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)

    async def _wait_for_slot(self, stop: asyncio.Event) -> None:
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({stopper, *self._units.tasks}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            await asyncio.gather(stopper, return_exceptions=True)

    # ------------------------------------------------------------------ heartbeat

    @contextlib.asynccontextmanager
    async def _heartbeats(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            await self.heartbeat_once()
