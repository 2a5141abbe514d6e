"""Runs the daemons periodically inside the server's event loop (APScheduler 3.x).

One interval job per daemon (``max_instances=1``, ``coalesce=True``): each run opens its own
session, calls ``run_once(session, time.time(), ...)``, and never lets an exception escape.
A failed run is logged and recorded in ``DaemonRun.last_error``; the next run retries.

With several server processes on one database, only the process holding the daemon lock
(``daemons.leader``) runs them: every process tries to take the lock every
``leader_retry_s`` seconds, and the scheduled runs of a process that does not hold it do
nothing. ``role`` says which this process is.

Daemons hand work to each other only through the database's state columns, but waiting a
whole interval at every hand-over adds up (an upload -> transitioner -> validator ->
aggregator -> transitioner chain closes a round and opens the next). So a run that handled
something **wakes** the daemons that may now have work (``PIPELINE_WAKES``): they run right
away (after a run in progress, never two at once) instead of at their next interval. An
upload wakes the transitioner the same way (``wake``). ``wake_pipeline=False`` turns it off.

``run_all_once`` is the one-pass mode for tests and tools: transitioner -> validator ->
aggregator, in that order, each with its own session.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.blobs import BlobStore
from work_server.config import DaemonIntervals
from work_server.daemons import aggregator, file_deleter, record_run, transitioner, validator
from work_server.daemons.leader import Leadership

log = logging.getLogger(__name__)

#: A daemon bound to its dependencies: (session, now) -> items handled.
DaemonFn = Callable[[AsyncSession, float], Awaitable[int]]

DAEMON_NAMES = (transitioner.NAME, validator.NAME, aggregator.NAME, file_deleter.NAME)

#: After a run that handled something, the daemons that may have work because of it: the
#: transitioner flags work units for the validator and fails others (aggregator); the
#: validator picks canonical results (aggregator) and asks the transitioner to look again;
#: the aggregator opens rounds whose work units the transitioner gives results.
PIPELINE_WAKES: dict[str, tuple[str, ...]] = {
    transitioner.NAME: (validator.NAME, aggregator.NAME),
    validator.NAME: (transitioner.NAME, aggregator.NAME),
    aggregator.NAME: (transitioner.NAME,),
}


def bind_daemons(
    *,
    blobs: BlobStore,
    runs_dir: Path,
    data_dir: Path | None = None,
    fashion_dir: Path | None = None,
    blob_grace_s: float = 3600.0,
) -> dict[str, DaemonFn]:
    """Every daemon's ``run_once`` with its keyword-only dependencies filled in."""

    async def run_transitioner(session: AsyncSession, now: float) -> int:
        return await transitioner.run_once(session, now)

    async def run_validator(session: AsyncSession, now: float) -> int:
        return await validator.run_once(session, now, blobs=blobs)

    async def run_aggregator(session: AsyncSession, now: float) -> int:
        return await aggregator.run_once(
            session,
            now,
            blobs=blobs,
            runs_dir=runs_dir,
            data_dir=data_dir,
            fashion_dir=fashion_dir,
        )

    async def run_file_deleter(session: AsyncSession, now: float) -> int:
        return await file_deleter.run_once(session, now, blobs=blobs, grace_s=blob_grace_s)

    return {
        transitioner.NAME: run_transitioner,
        validator.NAME: run_validator,
        aggregator.NAME: run_aggregator,
        file_deleter.NAME: run_file_deleter,
    }


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


class DaemonScheduler:
    """The server's daemons on an ``AsyncIOScheduler``; ``start()`` inside the running loop,
    ``await shutdown()`` to stop (waits for runs in progress, up to ``shutdown_timeout_s``)."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        intervals: DaemonIntervals,
        blobs: BlobStore,
        runs_dir: Path,
        data_dir: Path | None = None,
        fashion_dir: Path | None = None,
        blob_grace_s: float = 3600.0,
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
        self.daemons = bind_daemons(
            blobs=blobs,
            runs_dir=runs_dir,
            data_dir=data_dir,
            fashion_dir=fashion_dir,
            blob_grace_s=blob_grace_s,
        )
        self._scheduler: AsyncIOScheduler | None = None
        self._running: set[asyncio.Task[Any]] = set()
        self._locks = {name: asyncio.Lock() for name in self.daemons}
        self._woken: set[str] = set()
        self._wake_tasks: set[asyncio.Task[int]] = set()

    def interval(self, name: str) -> float:
        return float(getattr(self.intervals, name))

    @property
    def is_leader(self) -> bool:
        return self._leader

    @property
    def role(self) -> str:
        """``leader`` (runs the daemons) or ``standby`` (another process does)."""
        return "leader" if self._leader else "standby"

    async def check_leadership(self) -> bool:
        """Take the daemon lock if it is free, or check it is still ours (scheduled every
        ``leader_retry_s``); returns whether this process leads now."""
        if self.leadership is None:
            return True
        leader = await self.leadership.try_acquire()
        if leader != self._leader:
            log.warning(
                "daemons: this process (pid %d) %s",
                os.getpid(),
                "is now the leader and runs them" if leader else "lost the daemon lock",
            )
        self._leader = leader
        return leader

    async def run_now(self, name: str) -> int:
        """One run of daemon ``name`` (what each scheduled job does); nothing unless this
        process leads, checked again right before the run (a lost lock stops the daemons
        at once, not at the next ``leader_retry_s`` beat)."""
        if not self._leader or not await self.check_leadership():
            return 0
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            async with self._locks[name]:  # a woken run and a scheduled one never overlap
                self._woken.discard(name)
                handled = await run_daemon(
                    self.sessionmaker, name, self.daemons[name], self.clock()
                )
            if handled and self.wake_pipeline:
                self.wake(*PIPELINE_WAKES.get(name, ()))
            return handled
        finally:
            if task is not None:
                self._running.discard(task)

    def wake(self, *names: str) -> None:
        """Run these daemons now (after a run in progress) rather than at their next interval:
        something handed them work through the state columns. One pending wake per daemon;
        nothing when the scheduler is not running or this process does not lead."""
        if self._scheduler is None or not self._leader:
            return
        for name in names:
            if name in self._woken or name not in self.daemons:
                continue
            self._woken.add(name)
            task = asyncio.get_running_loop().create_task(
                self._woken_run(name), name=f"wake-{name}"
            )
            self._wake_tasks.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._wake_tasks.discard)

    async def _woken_run(self, name: str) -> int:
        if self._scheduler is None:  # shut down meanwhile
            self._woken.discard(name)
            return 0
        return await self.run_now(name)

    def start(self) -> None:
        """Schedule every daemon; must be called with the event loop running."""
        if self._scheduler is not None:
            return
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        first = datetime.now().astimezone()
        if self.leadership is not None:
            scheduler.add_job(
                self.check_leadership,
                "interval",
                id="leadership",
                name="leadership",
                seconds=self.leader_retry_s,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                next_run_time=first,
            )
        for offset, name in enumerate(self.daemons):
            scheduler.add_job(
                self.run_now,
                "interval",
                args=[name],
                id=name,
                name=name,
                seconds=self.interval(name),
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                # staggered first runs, so the daemons do not all hit the database at once
                next_run_time=first + timedelta(seconds=0.1 * (offset + 1)),
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
        if self._running:
            _, pending = await asyncio.wait(set(self._running), timeout=self.shutdown_timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)  # let APScheduler's executor callbacks run
        if self.leadership is not None:
            self._leader = False
            await self.leadership.release()


def setup_scheduler(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    intervals: DaemonIntervals,
    blobs: BlobStore,
    runs_dir: Path,
    data_dir: Path | None = None,
    fashion_dir: Path | None = None,
    blob_grace_s: float = 3600.0,
) -> DaemonScheduler:
    """A started ``DaemonScheduler`` (call from inside the running event loop)."""
    scheduler = DaemonScheduler(
        sessionmaker=sessionmaker,
        intervals=intervals,
        blobs=blobs,
        runs_dir=runs_dir,
        data_dir=data_dir,
        fashion_dir=fashion_dir,
        blob_grace_s=blob_grace_s,
    )
    scheduler.start()
    return scheduler


async def run_all_once(
    sessionmaker: async_sessionmaker[AsyncSession],
    now: float,
    *,
    blobs: BlobStore,
    runs_dir: Path,
    data_dir: Path | None = None,
    fashion_dir: Path | None = None,
) -> dict[str, int]:
    """Transitioner, validator, aggregator once each, in that order; errors propagate.
    Returns the items each handled."""
    daemons = bind_daemons(
        blobs=blobs, runs_dir=runs_dir, data_dir=data_dir, fashion_dir=fashion_dir
    )
    counts: dict[str, int] = {}
    for name in (transitioner.NAME, validator.NAME, aggregator.NAME):
        counts[name] = await run_daemon(sessionmaker, name, daemons[name], now, raise_errors=True)
    return counts
