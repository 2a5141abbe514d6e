from __future__ import annotations

import asyncio
import time

from sqlmodel.ext.asyncio.session import AsyncSession

from tests.work_server.daemons.conftest import T0, Sim, make_spec
from work_server.config import DaemonIntervals
from work_server.daemons.scheduler import DAEMON_NAMES, DaemonScheduler, run_all_once, run_daemon
from work_server.db.models import DaemonRun, Job, JobState, Result


async def test_scheduler_runs_every_daemon_and_shuts_down(sim: Sim) -> None:
    job_id = await sim.add_job(make_spec(shards=1, rounds=1))
    scheduler = DaemonScheduler(
        sessionmaker=sim.sm,
        intervals=DaemonIntervals(
            transitioner=0.05, validator=0.05, aggregator=0.05, file_deleter=0.05
        ),
        blobs=sim.blobs,
        runs_dir=sim.runs_dir,
        blob_grace_s=3600.0,
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
    assert run.last_run == T0 and run.last_error == "RuntimeError: disk on fire"
    await sim.validate(T0 + 1)  # the next good run clears it
    assert (await sim.get(DaemonRun, "validator")).last_error is None


async def test_run_all_once_in_order(sim: Sim) -> None:
    job_id = await sim.add_job(make_spec(shards=2))
    counts = await run_all_once(sim.sm, T0, blobs=sim.blobs, runs_dir=sim.runs_dir)
    assert counts == {"transitioner": 0, "validator": 0, "aggregator": 1}  # job started
    counts = await run_all_once(sim.sm, T0 + 1, blobs=sim.blobs, runs_dir=sim.runs_dir)
    assert counts["transitioner"] == 2  # round 1's work units get their results
    assert len(await sim.all(Result)) == 2
    assert (await sim.get(Job, job_id)).state == JobState.running
