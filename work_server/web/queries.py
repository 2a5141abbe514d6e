"""Read-only queries behind the web pages (each returns plain data for one template)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server import job_info
from work_server.db.models import (
    Host,
    Job,
    JobState,
    Result,
    Round,
    ServerState,
    UploadedDataset,
    WorkUnit,
)
from work_server.job_spec import JobSpec

ACTIVE_NOW_S = 300.0  # "active now" on the dashboard: contacted in the last 5 minutes

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
    info = job_info.from_json(job.info)
    return JobView(
        job=job,
        spec=JobSpec.model_validate(job.spec),
        rounds=rows,
        confusion=info.confusion_matrix if info is not None else None,
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
