from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from tests.work_server.daemons.conftest import T0, Sim, make_spec
from work_server.config import DaemonIntervals
from work_server.daemons.leader import FileLeadership
from work_server.daemons.roster import DAEMON_NAMES, ROSTER, DaemonDeps, DaemonSpec
from work_server.daemons.scheduler import DaemonScheduler, run_all_once, run_daemon
from work_server.db.models import DaemonRun, Job, JobState, Result, Round, RoundState


async def test_scheduler_runs_every_daemon_and_shuts_down(sim: Sim) -> None:
    job_id = await sim.add_job(make_spec(shards=1, rounds=1))
    scheduler = DaemonScheduler(
        sessionmaker=sim.sm,
        intervals=DaemonIntervals(
            transitioner=0.05, validator=0.05, aggregator=0.05, file_deleter=0.05
        ),
        deps=DaemonDeps(blobs=sim.blobs, runs_dir=sim.runs_dir, blob_grace_s=3600.0),
    )
    scheduler.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            runs = await sim.all(DaemonRun)
            job = await sim.get(Job, job_id)
            ready = len(runs) == len(DAEMON_NAMES) and job.state == JobState.running
            if ready and await sim.all(Result):
                break
            await asyncio.sleep(0.05)
    finally:
        await scheduler.shutdown()
    assert not scheduler.running
    assert {r.name for r in await sim.all(DaemonRun)} == set(DAEMON_NAMES)
    assert all(r.last_error is None for r in await sim.all(DaemonRun))
    assert (await sim.get(Job, job_id)).state == JobState.running
    assert len(await sim.all(Result)) == 1  # the transitioner created the first result
    await scheduler.shutdown()  # idempotent


async def test_a_failing_run_is_logged_and_recorded(sim: Sim) -> None:
    async def boom(session: AsyncSession, now: float) -> int:
        raise RuntimeError("disk on fire")

    assert await run_daemon(sim.sm, "validator", boom, T0) == 0
    run = await sim.get(DaemonRun, "validator")
    assert run.last_run == T0
    assert run.last_error == "RuntimeError: disk on fire"
    await sim.validate(T0 + 1)  # the next good run clears it
    assert (await sim.get(DaemonRun, "validator")).last_error is None


async def test_run_all_once_in_order(sim: Sim) -> None:
    job_id = await sim.add_job(make_spec(shards=2))
    counts = await run_all_once(sim.sm, T0, deps=_deps(sim))
    assert counts == {
        "transitioner": 0,
        "validator": 0,
        "round_closer": 0,
        "work_generator": 1,  # job started
        "job_finisher": 0,
    }
    counts = await run_all_once(sim.sm, T0 + 1, deps=_deps(sim))
    assert counts["transitioner"] == 2  # round 1's work units get their results
    assert len(await sim.all(Result)) == 2
    assert (await sim.get(Job, job_id)).state == JobState.running


def _deps(sim: Sim) -> DaemonDeps:
    return DaemonDeps(blobs=sim.blobs, runs_dir=sim.runs_dir)


def _slow_intervals() -> DaemonIntervals:
    """Every daemon runs once at start, then not for an hour: only wakes move work on."""
    return DaemonIntervals(
        transitioner=3600.0, validator=3600.0, aggregator=3600.0, file_deleter=3600.0
    )


async def _until(check: Callable[[], Awaitable[bool]], within: float = 20.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_wakes_carry_a_round_through_the_pipeline(sim: Sim) -> None:
    job_id = await sim.add_job(make_spec(shards=2, rounds=2))
    host = await sim.add_host()
    scheduler = DaemonScheduler(sessionmaker=sim.sm, intervals=_slow_intervals(), deps=_deps(sim))
    scheduler.start()
    try:
        # the work generator's first run starts the job and wakes the transitioner
        assert await _until(lambda: _count(sim, Result, 2))
        for wu in await sim.wus(job_id, 1):
            for r in await sim.claim_all(wu.id, [host], time.time()):
                await sim.upload(r.id, time.time(), noise=0.01)
        scheduler.wake("transitioner")  # what the upload handler does
        # transitioner -> validator -> round closer (closes round 1) -> work generator
        # (round 2) -> transitioner (its results)
        assert await _until(lambda: _count(sim, Result, 4))
    finally:
        await scheduler.shutdown()
    rounds = await sim.all(Round)
    assert [(r.number, r.state) for r in sorted(rounds, key=lambda r: r.number)] == [
        (1, RoundState.done),
        (2, RoundState.running),
    ]
    assert all(r.last_error is None for r in await sim.all(DaemonRun))


async def test_without_wakes_work_waits_for_the_interval(sim: Sim) -> None:
    await sim.add_job(make_spec(shards=2, rounds=2))
    scheduler = DaemonScheduler(
        sessionmaker=sim.sm,
        intervals=_slow_intervals(),
        deps=_deps(sim),
        wake_pipeline=False,
    )
    scheduler.start()
    try:
        assert await _until(lambda: _job_running(sim))
        await asyncio.sleep(1.0)
        # the transitioner ran before the job started, and not since
        assert await sim.all(Result) == []
    finally:
        await scheduler.shutdown()
    scheduler.wake("transitioner")  # after shutdown: nothing, no error
    assert await sim.all(Result) == []


async def _count(sim: Sim, model: type[Result], n: int) -> bool:
    return len(await sim.all(model)) >= n


async def _job_running(sim: Sim) -> bool:
    jobs = await sim.all(Job)
    return bool(jobs) and jobs[0].state == JobState.running


async def test_a_run_longer_than_its_interval_skips_ticks_quietly(
    sim: Sim, caplog: pytest.LogCaptureFixture
) -> None:
    """Ticks during a run do nothing, without APScheduler's "maximum number of running
    instances reached" warning; runs never overlap; the next tick after a run starts one."""
    active, overlaps, runs = 0, 0, 0

    async def slow(session: AsyncSession, now: float, deps: DaemonDeps) -> int:
        nonlocal active, overlaps, runs
        active += 1
        overlaps += active > 1
        await asyncio.sleep(0.3)
        active -= 1
        runs += 1
        return 0

    roster = (DaemonSpec(name="slow", run_once=slow, interval_field="transitioner"),)
    scheduler = DaemonScheduler(
        sessionmaker=sim.sm,
        intervals=DaemonIntervals(transitioner=0.02),
        deps=_deps(sim),
        roster=roster,
    )
    caplog.set_level(logging.DEBUG)
    scheduler.start()
    try:
        assert await _until(lambda: _at_least(lambda: runs, 3), within=10.0)
    finally:
        await scheduler.shutdown()
    assert overlaps == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any("tick skipped" in r.getMessage() for r in caplog.records)


async def test_taking_the_daemon_lock_is_logged_at_info(
    sim: Sim, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler = DaemonScheduler(
        sessionmaker=sim.sm,
        intervals=_slow_intervals(),
        deps=_deps(sim),
        leadership=FileLeadership(tmp_path / "daemons.lock"),
    )
    caplog.set_level(logging.INFO, logger="work_server.daemons.scheduler")
    assert await scheduler.check_leadership()
    assert scheduler.role == "leader"
    assert await scheduler.check_leadership()  # still ours: logged once
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert "is now the leader" in record.getMessage()
    assert scheduler.leadership is not None
    await scheduler.leadership.release()


def test_the_roster_names_each_daemon_once_in_pipeline_order() -> None:
    assert DAEMON_NAMES == (
        "transitioner",
        "validator",
        "round_closer",
        "work_generator",
        "job_finisher",
        "file_deleter",
    )
    intervals = DaemonIntervals(aggregator=7.0)
    fl = [s for s in ROSTER if s.name in ("round_closer", "work_generator", "job_finisher")]
    assert [s.interval(intervals) for s in fl] == [7.0, 7.0, 7.0]
    assert all(set(s.wakes) <= set(DAEMON_NAMES) for s in ROSTER)


async def _at_least(value: Callable[[], int], n: int) -> bool:
    return value() >= n
