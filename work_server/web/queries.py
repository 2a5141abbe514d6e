"""Read-only queries behind the web pages (each returns plain data for one template)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.db.models import (
    Blob,
    DaemonRun,
    Host,
    Job,
    JobState,
    Result,
    Round,
    ServerState,
    UploadedDataset,
    WorkUnit,
    WorkUnitState,
)
from work_server.rounds import INFO_CONFUSION
from work_server.services.status import DAEMONS
from yadml_common.wire import JobSpec

ACTIVE_NOW_S = 300.0  # "active now" on the dashboard: contacted in the last 5 minutes
DAY_S = 86400.0

METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("accuracy", "Accuracy"),
    ("loss", "Loss"),
    ("precision_macro", "Precision"),
    ("recall_macro", "Recall"),
    ("f1_macro", "F1"),
    ("roc_auc_macro", "ROC AUC"),
    ("average_precision_macro", "AP"),
)


@dataclass
class RoundRow:
    number: int
    state: str
    metrics: dict[str, float]
    results_success: int
    results_error: int
    results_no_reply: int
    duration_s: float | None


@dataclass
class JobView:
    job: Job
    spec: JobSpec
    rounds: list[RoundRow]
    confusion: list[list[int]] | None

    @property
    def evaluated(self) -> list[RoundRow]:
        return [r for r in self.rounds if r.metrics]

    @property
    def latest(self) -> RoundRow | None:
        ev = self.evaluated
        return ev[-1] if ev else None

    @property
    def done_rounds(self) -> int:
        return len(self.evaluated)

    @property
    def dataset_label(self) -> str:
        if self.spec.dataset == "upload" and self.spec.dataset_sha256:
            return f"upload {self.spec.dataset_sha256[:12]}"
        return self.spec.dataset


async def job_view(session: AsyncSession, job: Job) -> JobView:
    rounds = (
        await session.exec(select(Round).where(Round.job_id == job.id).order_by(col(Round.number)))
    ).all()
    rows = [
        RoundRow(
            number=r.number,
            state=r.state,
            metrics={
                k: float(v) for k, v in (r.metrics or {}).items() if isinstance(v, int | float)
            },
            results_success=r.results_success,
            results_error=r.results_error,
            results_no_reply=r.results_no_reply,
            duration_s=None if r.closed_at is None else r.closed_at - r.started_at,
        )
        for r in rounds
    ]
    confusion = (job.info or {}).get(INFO_CONFUSION)
    return JobView(
        job=job,
        spec=JobSpec.model_validate(job.spec),
        rounds=rows,
        confusion=confusion if isinstance(confusion, list) else None,
    )


async def focus_job(session: AsyncSession) -> Job | None:
    """The job the dashboard shows: the oldest unfinished one, else the newest."""
    active = (
        await session.exec(
            select(Job)
            .where(col(Job.state).in_([JobState.pending, JobState.running]))
            .order_by(col(Job.id))
            .limit(1)
        )
    ).first()
    if active is not None:
        return active
    return (await session.exec(select(Job).order_by(col(Job.id).desc()).limit(1))).first()


@dataclass
class ActiveHost:
    host: Host
    in_progress: int


@dataclass
class Dashboard:
    view: JobView | None
    round_results: dict[str, int] = field(default_factory=dict)
    active_hosts: list[ActiveHost] = field(default_factory=list)


async def dashboard(session: AsyncSession, *, now: float) -> Dashboard:
    job = await focus_job(session)
    view = None if job is None else await job_view(session, job)
    round_results: dict[str, int] = {}
    if job is not None and job.current_round:
        rows = (
            await session.exec(
                select(Result.server_state, Result.outcome, func.count())
                .join(WorkUnit, col(WorkUnit.id) == Result.workunit_id)
                .join(Round, col(Round.id) == WorkUnit.round_id)
                .where(Round.job_id == job.id, Round.number == job.current_round)
                .group_by(col(Result.server_state), col(Result.outcome))
            )
        ).all()
        for state, outcome, n in rows:
            label = str(outcome) if state == ServerState.over else str(state)
            round_results[label] = round_results.get(label, 0) + int(n)
    in_progress = dict(
        (
            await session.exec(
                select(Result.host_id, func.count())
                .where(Result.server_state == ServerState.in_progress)
                .group_by(col(Result.host_id))
            )
        ).all()
    )
    hosts = (
        await session.exec(
            select(Host)
            .where(Host.last_contact >= now - ACTIVE_NOW_S, col(Host.banned).is_(False))
            .order_by(col(Host.id))
        )
    ).all()
    return Dashboard(
        view=view,
        round_results=round_results,
        active_hosts=[ActiveHost(h, int(in_progress.get(h.id, 0))) for h in hosts],
    )


@dataclass
class DaemonRow:
    name: str
    last_run: float | None
    last_error: str | None


@dataclass
class StatusPage:
    daemons: list[DaemonRow]
    results_unsent: int
    results_in_progress: int
    workunits_active: int
    workunits_need_validate: int
    results_last_hour: int
    results_last_day: int
    hosts_total: int
    hosts_active_day: int
    jobs_running: int
    blob_count: int
    blob_bytes: int


async def status_page(session: AsyncSession, *, now: float) -> StatusPage:
    runs = {d.name: d for d in (await session.exec(select(DaemonRun))).all()}
    names = list(DAEMONS) + sorted(set(runs) - set(DAEMONS))
    daemons = [
        DaemonRow(
            name=n,
            last_run=runs[n].last_run if n in runs else None,
            last_error=runs[n].last_error if n in runs else None,
        )
        for n in names
    ]
    by_state: dict[Any, int] = dict(
        (
            await session.exec(
                select(Result.server_state, func.count()).group_by(col(Result.server_state))
            )
        ).all()
    )

    async def count(stmt: Any) -> int:
        return int((await session.exec(stmt)).one() or 0)

    wu_active = await count(
        select(func.count()).select_from(WorkUnit).where(WorkUnit.state == WorkUnitState.active)
    )
    wu_validate = await count(
        select(func.count())
        .select_from(WorkUnit)
        .where(col(WorkUnit.need_validate).is_(True), WorkUnit.state == WorkUnitState.active)
    )
    last_hour = await count(
        select(func.count()).select_from(Result).where(col(Result.received_at) >= now - 3600)
    )
    last_day = await count(
        select(func.count()).select_from(Result).where(col(Result.received_at) >= now - DAY_S)
    )
    hosts_total = await count(select(func.count()).select_from(Host))
    hosts_day = await count(
        select(func.count()).select_from(Host).where(Host.last_contact >= now - DAY_S)
    )
    jobs_running = await count(
        select(func.count())
        .select_from(Job)
        .where(col(Job.state).in_([JobState.pending, JobState.running]))
    )
    blob_count, blob_bytes = (
        await session.exec(select(func.count(), func.coalesce(func.sum(Blob.size), 0)))
    ).one()
    return StatusPage(
        daemons=daemons,
        results_unsent=int(by_state.get(ServerState.unsent, 0)),
        results_in_progress=int(by_state.get(ServerState.in_progress, 0)),
        workunits_active=wu_active,
        workunits_need_validate=wu_validate,
        results_last_hour=last_hour,
        results_last_day=last_day,
        hosts_total=hosts_total,
        hosts_active_day=hosts_day,
        jobs_running=jobs_running,
        blob_count=int(blob_count),
        blob_bytes=int(blob_bytes),
    )


async def hosts(session: AsyncSession) -> list[Host]:
    return list((await session.exec(select(Host).order_by(col(Host.id)))).all())


async def uploaded_datasets(session: AsyncSession) -> list[UploadedDataset]:
    return list(
        (
            await session.exec(
                select(UploadedDataset).order_by(col(UploadedDataset.created_at).desc())
            )
        ).all()
    )


async def jobs(session: AsyncSession, limit: int = 100) -> list[JobView]:
    rows = (await session.exec(select(Job).order_by(col(Job.id).desc()).limit(limit))).all()
    return [await job_view(session, j) for j in rows]
