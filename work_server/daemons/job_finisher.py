"""Job finisher: ends the jobs whose rounds are over and writes their final report.

One run, each job in its own transaction:

1. running jobs without a running round
   * whose last round (``JobSpec.rounds``) the round closer closed as ``done``: the final
     report is written (``state: completed``), then the job becomes ``completed`` with
     ``finished_at``. In that order, so whoever sees ``completed`` also sees the whole
     report; a job left between the two by a crash is picked up on the next run.
   * with a ``failed`` round (the round closer put the reason in ``Job.error``): the job
     becomes ``failed`` with ``finished_at``, then its report (the rounds done so far, if
     any) is rewritten.
2. cancelled jobs whose work is retired (no running round) and that have no
   ``finished_at`` yet get it (the API sets it when it cancels a job itself).

Final models stay in the blob store (``Job.model_sha256``); the file deleter keeps them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import exists, func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.daemons import record_run
from work_server.daemons.job_report import write_job_report
from work_server.db.models import Job, JobState, Round, RoundState
from work_server.job_spec import JobSpec

NAME = "job_finisher"
log = logging.getLogger(__name__)


async def run_once(session: AsyncSession, now: float, *, runs_dir: Path) -> int:
    """One pass (see module docstring). Returns the jobs completed, failed or stamped
    finished."""
    problems: list[str] = []
    handled = 0
    jobs = (
        await session.exec(
            select(Job.id, Job.spec).where(col(Job.state) == JobState.running).order_by(col(Job.id))
        )
    ).all()
    for job_id, raw_spec in jobs:
        if job_id is None:
            continue
        last = await _last_rounds(session, job_id)
        if RoundState.running in last:
            continue
        if RoundState.failed in last:
            problem = await _fail(session, job_id, now, runs_dir=runs_dir)
        elif last.get(RoundState.done, 0) >= JobSpec.model_validate(raw_spec).rounds:
            problem = await _complete(session, job_id, now, runs_dir=runs_dir)
        else:
            continue  # between rounds: the work generator's
        handled += 1
        if problem:
            problems.append(problem)
    handled += await _stamp_cancelled(session, now)
    await record_run(session, NAME, now, error="; ".join(problems) or None)
    return handled


async def _last_rounds(session: AsyncSession, job_id: int) -> dict[str, int]:
    """The highest round number of the job in each round state."""
    rows = (
        await session.exec(
            select(Round.state, func.max(Round.number))
            .where(col(Round.job_id) == job_id)
            .group_by(col(Round.state))
        )
    ).all()
    return {state: number for state, number in rows}


async def _complete(
    session: AsyncSession, job_id: int, now: float, *, runs_dir: Path
) -> str | None:
    problem = await write_job_report(
        session,
        job_id,
        now,
        runs_dir=runs_dir,
        override={"state": JobState.completed, "finished_at": now},
    )
    changed = await session.exec(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.state) == JobState.running)
        .values(state=JobState.completed, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    if changed.rowcount == 1:
        log.info("job %s completed", job_id)
    return problem


async def _fail(session: AsyncSession, job_id: int, now: float, *, runs_dir: Path) -> str | None:
    changed = await session.exec(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.state) == JobState.running)
        .values(
            state=JobState.failed,
            finished_at=now,
            error=func.coalesce(col(Job.error), "a round failed"),
        )
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    if changed.rowcount != 1:
        return None  # cancelled meanwhile
    error = (await session.exec(select(Job.error).where(col(Job.id) == job_id))).one_or_none()
    log.info("job %s failed: %s", job_id, error)
    return await write_job_report(session, job_id, now, runs_dir=runs_dir)


async def _stamp_cancelled(session: AsyncSession, now: float) -> int:
    running_round = exists().where(
        col(Round.job_id) == col(Job.id), col(Round.state) == RoundState.running
    )
    stamped = await session.exec(
        update(Job)
        .where(
            col(Job.state) == JobState.cancelled,
            col(Job.finished_at).is_(None),
            ~running_round,
        )
        .values(finished_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return int(stamped.rowcount or 0)
