"""Operator-side job management: submit, list, inspect, cancel."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.db.models import Job, JobState, Round, UploadedDataset
from work_server.errors import Conflict, NotFound, Unprocessable
from work_server.job_spec import JobSpec
from work_server.job_status import JobStatus, RoundMetrics
from work_server.ml.evaluate import METRIC_KEYS
from work_server.services import audit
from work_server.services.principal import Principal

ACTIVE_JOB_STATES = (JobState.pending, JobState.running)
FINISHED_JOB_STATES = (JobState.completed, JobState.failed, JobState.cancelled)


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


def check_spec(spec: JobSpec) -> None:
    rep = spec.replication
    if rep.target_nresults < rep.min_quorum:
        raise Unprocessable("replication.target_nresults must be >= min_quorum")
    if rep.max_total_results < rep.target_nresults:
        raise Unprocessable("replication.max_total_results must be >= target_nresults")


async def submit_job(
    session: AsyncSession, spec: JobSpec, *, max_running_jobs: int, now: float
) -> Job:
    check_spec(spec)
    if spec.dataset == "upload" and await session.get(UploadedDataset, spec.dataset_sha256) is None:
        raise Unprocessable(f"no uploaded dataset {spec.dataset_sha256}", code="unknown_dataset")
    running = (
        await session.exec(
            select(func.count()).select_from(Job).where(col(Job.state).in_(ACTIVE_JOB_STATES))
        )
    ).one()
    if running >= max_running_jobs:
        raise Conflict(
            f"{running} job(s) already running; the limit is {max_running_jobs} "
            "(raise it with --max-running-jobs)",
            code="job_limit",
        )
    job = Job(spec=spec.model_dump(mode="json"), created_at=now)
    session.add(job)
    await session.commit()
    await session.refresh(job)
    return job


async def start_job(
    session: AsyncSession,
    spec: JobSpec,
    *,
    max_running_jobs: int,
    actor: Principal,
    client_ip: str | None,
    now: float,
) -> Job:
    """An operator's job submission (the API and the web pages): :func:`submit_job`, then
    its audit event (the job's id exists only once it is committed)."""
    job = await submit_job(session, spec, max_running_jobs=max_running_jobs, now=now)
    audit.record(
        session,
        actor=actor,
        action=audit.Action.job_start,
        target=f"job:{job.id}",
        detail=audit.job_summary(spec),
        client_ip=client_ip,
        now=now,
    )
    await session.commit()
    return job


async def get_job(session: AsyncSession, job_id: int) -> Job:
    job = await session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


async def job_status(session: AsyncSession, job: Job) -> JobStatus:
    rounds = (
        await session.exec(
            select(Round)
            .where(Round.job_id == job.id, col(Round.metrics).is_not(None))
            .order_by(col(Round.number))
        )
    ).all()
    metrics = [
        RoundMetrics(
            round=r.number,
            results_success=r.results_success,
            results_error=r.results_error,
            results_no_reply=r.results_no_reply,
            duration_s=(r.closed_at or r.started_at) - r.started_at,
            **{k: float(v) for k, v in (r.metrics or {}).items() if k in METRIC_KEYS},
        )
        for r in rounds
    ]
    assert job.id is not None
    return JobStatus(
        id=job.id,
        state=job.state,
        spec=JobSpec.model_validate(job.spec),
        current_round=job.current_round,
        rounds=metrics,
        created_at=datetime.fromtimestamp(job.created_at, tz=UTC),
        started_at=_dt(job.started_at),
        finished_at=_dt(job.finished_at),
        error=job.error,
        model_sha256=job.model_sha256 if job.state == JobState.completed else None,
        report_path=job.report_path,
    )


async def list_jobs(session: AsyncSession, limit: int = 100) -> list[Job]:
    return list((await session.exec(select(Job).order_by(col(Job.id).desc()).limit(limit))).all())


async def cancel_job(session: AsyncSession, job_id: int, now: float) -> Job:
    """Mark the job cancelled; the round closer then ends its work (state columns only)."""
    job = await get_job(session, job_id)
    if job.state in FINISHED_JOB_STATES:
        raise Conflict(f"job {job_id} is already {job.state}", code="job_finished")
    res = await session.exec(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.state).in_(ACTIVE_JOB_STATES))
        .values(state=JobState.cancelled, finished_at=now)
    )
    if res.rowcount != 1:
        await session.rollback()
        raise Conflict(f"job {job_id} finished meanwhile", code="job_finished")
    await session.commit()
    await session.refresh(job)
    return job


#: The files of a job's run report, as the API and the pages serve them.
REPORT_FILES = ("report.json", "accuracy.png", "confusion.png")


async def final_model_sha256(session: AsyncSession, job_id: int) -> str:
    """The blob of a completed job's final weights (``NotFound`` ``no_model`` before that)."""
    job = await get_job(session, job_id)
    if job.state != JobState.completed or job.model_sha256 is None:
        raise NotFound(f"job {job_id} has no final model (state {job.state})", code="no_model")
    return job.model_sha256


async def report_file(runs_dir: Path, job_id: int, name: str) -> Path:
    """One file of a job's run report (``NotFound`` for another name, or before it exists)."""
    if name not in REPORT_FILES:
        raise NotFound(
            "report files are " + ", ".join(REPORT_FILES[:-1]) + f" and {REPORT_FILES[-1]}"
        )
    path = runs_dir / str(job_id) / name
    if not await asyncio.to_thread(path.is_file):
        raise NotFound(f"job {job_id} has no {name} yet")
    return path
