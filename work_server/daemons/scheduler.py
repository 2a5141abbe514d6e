"""Runs the daemons periodically inside the server's event loop (APScheduler 3.x).

Every daemon of the roster (``daemons.roster.ROSTER``) runs every ``DaemonSpec.interval``:
each run opens its own session, calls ``run_once(session, time.time(), deps)``, and never
lets an exception escape. A failed run is logged and recorded in ``DaemonRun.last_error``;
the next run retries.

APScheduler only keeps the beat: its job for a daemon is a *tick* that returns at once,
after starting a run unless that daemon has one in flight or waiting. So a run that lasts
longer than its interval (a merge) makes the ticks meanwhile do nothing, quietly, instead of
APScheduler refusing them as "maximum number of running instances reached" (a warning per
tick); the next tick after the run starts the next run.

With several server processes on one database, only the process holding the daemon lock
(``daemons.leader``) runs them: every process tries to take the lock every
``leader_retry_s`` seconds, and the runs of a process that does not hold it do nothing.
``role`` says which this process is.

Daemons hand work to each other only through the database's state columns, but waiting a
whole interval at every hand-over adds up (an upload -> transitioner -> validator -> round
closer -> work generator -> transitioner chain closes a round and opens the next). So a run
that handled something **wakes** the daemons that may now have work (``DaemonSpec.wakes``):
they run right away (after a run in progress, never two at once) instead of at their next
interval. An upload wakes the transitioner the same way (``wake``). ``wake_pipeline=False``
turns it off.

``run_all_once`` is the one-pass mode for tests and tools: the pipeline daemons once each,
in roster order, each with its own session.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.config import DaemonIntervals
from work_server.daemons import record_run
from work_server.daemons.leader import Leadership
from work_server.daemons.roster import ROSTER, DaemonDeps, DaemonSpec

log = logging.getLogger(__name__)

#: A daemon bound to its dependencies: (session, now) -> items handled.
DaemonFn = Callable[[AsyncSession, float], Awaitable[int]]


async def run_daemon(
    sessionmaker: async_sessionmaker[AsyncSession],
    name: str,
    fn: DaemonFn,
    now: float,
    *,
    raise_errors: bool = False,
) -> int:
    """One run of one daemon in a fresh session. Errors are logged and recorded in
    ``DaemonRun.last_error`` (and re-raised when ``raise_errors``)."""
    try:
        async with sessionmaker() as session:
            return await fn(session, now)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("daemon %s failed", name)
        try:
            async with sessionmaker() as session:
                await record_run(session, name, now, error=f"{type(exc).__name__}: {exc}"[:2000])
        except Exception:
            log.exception("daemon %s: recording the failure failed too", name)
        if raise_errors:
            raise
        return 0


def _bind(spec: DaemonSpec, deps: DaemonDeps) -> DaemonFn:
    def run(session: AsyncSession, now: float) -> Awaitable[int]:
        return spec.run_once(session, now, deps)

    return run


class DaemonScheduler:
    """The roster's daemons on an ``AsyncIOScheduler``; ``start()`` inside the running loop,
    ``await shutdown()`` to stop (waits for runs in progress, up to ``shutdown_timeout_s``)."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        intervals: DaemonIntervals,
        deps: DaemonDeps,
        roster: tuple[DaemonSpec, ...] = ROSTER,
        clock: Callable[[], float] = time.time,
        shutdown_timeout_s: float = 30.0,
        leadership: Leadership | None = None,
        leader_retry_s: float = 1.0,
        wake_pipeline: bool = True,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.wake_pipeline = wake_pipeline
        self.leadership = leadership
        self.leader_retry_s = leader_retry_s
        self._leader = leadership is None  # no lock: this is the only process
        self.intervals = intervals
        self.clock = clock
        self.shutdown_timeout_s = shutdown_timeout_s
        self.specs = {spec.name: spec for spec in roster}
        self.daemons = {spec.name: _bind(spec, deps) for spec in roster}
        self._scheduler: AsyncIOScheduler | None = None
        self._running: set[asyncio.Task[Any]] = set()
        self._locks = {name: asyncio.Lock() for name in self.daemons}
        self._waiting: set[str] = set()  # daemons with a run started but not yet running
        self._tasks: set[asyncio.Task[Any]] = set()
        self._checking_leadership = False

    def interval(self, name: str) -> float:
        return self.specs[name].interval(self.intervals)

    @property
    def is_leader(self) -> bool:
        return self._leader

    @property
    def role(self) -> str:
        """``leader`` (runs the daemons) or ``standby`` (another process does)."""
        return "leader" if self._leader else "standby"

    async def check_leadership(self) -> bool:
        """Take the daemon lock if it is free, or check it is still ours (every
        ``leader_retry_s``); returns whether this process leads now."""
        if self.leadership is None:
            return True
        leader = await self.leadership.try_acquire()
        if leader and not self._leader:
            log.info("daemons: this process (pid %d) is now the leader and runs them", os.getpid())
        elif self._leader and not leader:  # trouble: only shutdown gives the lock up
            log.warning("daemons: this process (pid %d) lost the daemon lock", os.getpid())
        self._leader = leader
        return leader

    async def run_now(self, name: str) -> int:
        """One run of daemon ``name`` (what each tick and wake-up starts); nothing unless
        this process leads, checked again right before the run (a lost lock stops the
        daemons at once, not at the next ``leader_retry_s`` beat)."""
        if not self._leader or not await self.check_leadership():
            self._waiting.discard(name)
            return 0
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            async with self._locks[name]:  # a woken run and a scheduled one never overlap
                self._waiting.discard(name)
                handled = await run_daemon(
                    self.sessionmaker, name, self.daemons[name], self.clock()
                )
            if handled and self.wake_pipeline:
                self.wake(*self.specs[name].wakes)
            return handled
        finally:
            if task is not None:
                self._running.discard(task)

    def wake(self, *names: str) -> None:
        """Run these daemons now (after a run in progress) rather than at their next interval:
        something handed them work through the state columns. One waiting run per daemon;
        nothing when the scheduler is not running or this process does not lead."""
        if self._scheduler is None or not self._leader:
            return
        for name in names:
            if name in self.daemons:
                self._start_run(name)

    def _start_run(self, name: str) -> None:
        if name in self._waiting:
            return  # the waiting run will see whatever this one was for
        self._waiting.add(name)
        self._spawn(self._started_run(name), name=f"run-{name}")

    async def _started_run(self, name: str) -> int:
        if self._scheduler is None:  # shut down meanwhile
            self._waiting.discard(name)
            return 0
        return await self.run_now(name)

    def _spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._tasks.discard)

    async def _tick(self, name: str) -> None:
        """A scheduled beat: start a run unless one is in flight or waiting (then this beat
        is skipped, like an overlapping APScheduler run, but without its warning)."""
        if self._locks[name].locked():
            log.debug("daemon %s: still running, tick skipped", name)
            return
        self._start_run(name)

    async def _leadership_tick(self) -> None:
        if self._checking_leadership:
            return  # a slow check (a busy database) is still going
        self._checking_leadership = True

        async def check() -> None:
            try:
                await self.check_leadership()
            finally:
                self._checking_leadership = False

        self._spawn(check(), name="leadership")

    def start(self) -> None:
        """Schedule every daemon; must be called with the event loop running."""
        if self._scheduler is not None:
            return
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        first = datetime.now().astimezone()
        beat: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
        if self.leadership is not None:
            scheduler.add_job(
                self._leadership_tick,
                "interval",
                id="leadership",
                name="leadership",
                seconds=self.leader_retry_s,
                next_run_time=first,
                **beat,
            )
        for offset, name in enumerate(self.daemons):
            scheduler.add_job(
                self._tick,
                "interval",
                args=[name],
                id=name,
                name=name,
                seconds=self.interval(name),
                # staggered first runs, so the daemons do not all hit the database at once
                next_run_time=first + timedelta(seconds=0.1 * (offset + 1)),
                **beat,
            )
        scheduler.start()
        self._scheduler = scheduler

    @property
    def running(self) -> bool:
        return self._scheduler is not None

    async def shutdown(self) -> None:
        """Stop scheduling, let runs in progress finish (bounded), then shut down."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return
        scheduler.pause()
        busy = self._running | self._tasks
        if busy:
            _, pending = await asyncio.wait(busy, timeout=self.shutdown_timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)  # let APScheduler's executor callbacks run
        if self.leadership is not None:
            self._leader = False
            await self.leadership.release()


async def run_all_once(
    sessionmaker: async_sessionmaker[AsyncSession],
    now: float,
    *,
    deps: DaemonDeps,
    roster: tuple[DaemonSpec, ...] = ROSTER,
) -> dict[str, int]:
    """The pipeline daemons once each, in roster order; errors propagate. Returns the items
    each handled."""
    counts: dict[str, int] = {}
    for spec in roster:
        if spec.pipeline:
            counts[spec.name] = await run_daemon(
                sessionmaker, spec.name, _bind(spec, deps), now, raise_errors=True
            )
    return counts
