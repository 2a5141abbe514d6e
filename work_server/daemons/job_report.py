"""A job's report (``runs_dir/<job id>/report.json`` + plots), rebuilt from the database:
by the round closer after every round it closes, and by the job finisher at the end."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server import job_info
from work_server.daemons import release_connection
from work_server.db.models import Job, Round, RoundState
from work_server.job_spec import JobSpec
from work_server.job_status import RoundMetrics
from work_server.ml.evaluate import METRIC_KEYS
from work_server.report import write_report

log = logging.getLogger(__name__)

REPORT_FILE = "report.json"


async def build_report(
    session: AsyncSession, job_id: int, now: float, override: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The report dict of a job from the database (None when no round is done yet);
    ``override`` replaces job fields (state, finished_at) about to be committed."""
    job = await session.get(Job, job_id, populate_existing=True)
    if job is None:
        return None
    rounds = (
        await session.exec(
            select(Round)
            .where(col(Round.job_id) == job_id, col(Round.state) == RoundState.done)
            .order_by(col(Round.number))
            .execution_options(populate_existing=True)
        )
    ).all()
    if not rounds:
        return None
    spec = JobSpec.model_validate(job.spec)
    info = job_info.from_json(job.info)
    metrics: list[dict[str, Any]] = []
    for r in rounds:
        m = dict(r.metrics or {})
        metrics.append(
            RoundMetrics(
                round=r.number,
                **{k: float(m[k]) for k in METRIC_KEYS},
                results_success=r.results_success,
                results_error=r.results_error,
                results_no_reply=r.results_no_reply,
                duration_s=(r.closed_at or now) - r.started_at,
            ).model_dump()
        )
    last = metrics[-1]
    final = {"round": last["round"], **{k: last[k] for k in METRIC_KEYS}}
    started = job.started_at if job.started_at is not None else job.created_at
    state = (override or {}).get("state", job.state)
    finished_at = (override or {}).get("finished_at", job.finished_at)
    return {
        "job_id": job_id,
        "dataset": spec.dataset,
        "model": spec.model,
        "config": spec.model_dump(mode="json"),
        "state": state,
        "rounds": metrics,
        "final": final,
        "confusion_matrix": info.confusion_matrix if info is not None else None,
        "wall_s": (finished_at or now) - started,
        "model_sha256": job.model_sha256,
    }


async def write_job_report(
    session: AsyncSession,
    job_id: int,
    now: float,
    *,
    runs_dir: Path,
    override: dict[str, Any] | None = None,
) -> str | None:
    """Rewrite a job's report; returns a problem description instead of raising (the round
    is already closed and committed; the next round's report will try again)."""
    report = await build_report(session, job_id, now, override)
    if report is None:
        return None
    run_dir = runs_dir / str(job_id)
    await release_connection(session)
    try:
        t0 = time.perf_counter()
        await asyncio.to_thread(write_report, run_dir, report)
        log.debug("report of job %s written in %.2fs", job_id, time.perf_counter() - t0)
    except Exception as exc:
        log.exception("writing the report of job %s failed", job_id)
        return f"report of job {job_id}: {exc}"
    path = str(run_dir / REPORT_FILE)
    await session.exec(
        update(Job)
        .where(col(Job.id) == job_id)
        .values(report_path=path)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return None
