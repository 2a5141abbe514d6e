"""Server status: what BOINC's server-status page shows, as data."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.db.models import DaemonRun, Host, Job, JobState, Result, ServerState
from work_server.services import trust
from yadml_common.wire import HostTrust, JobSpec, ServerStatus

DAEMONS = ("transitioner", "validator", "aggregator", "file_deleter")


async def server_status(
    session: AsyncSession, *, now: float, active_window_s: float
) -> ServerStatus:
    hosts_total = (await session.exec(select(func.count()).select_from(Host))).one()
    hosts_active = (
        await session.exec(
            select(func.count())
            .select_from(Host)
            .where(Host.last_contact >= now - active_window_s, col(Host.banned).is_(False))
        )
    ).one()
    jobs_running = (
        await session.exec(
            select(func.count())
            .select_from(Job)
            .where(col(Job.state).in_([JobState.pending, JobState.running]))
        )
    ).one()
    by_state = dict(
        (
            await session.exec(
                select(Result.server_state, func.count()).group_by(col(Result.server_state))
            )
        ).all()
    )
    by_outcome = dict(
        (
            await session.exec(
                select(Result.outcome, func.count())
                .where(Result.server_state == ServerState.over)
                .group_by(col(Result.outcome))
            )
        ).all()
    )
    last_hour = (
        await session.exec(
            select(func.count()).select_from(Result).where(col(Result.received_at) >= now - 3600)
        )
    ).one()
    runs = {d.name: d.last_run for d in (await session.exec(select(DaemonRun))).all()}
    # "trusted" as the running adaptive job sees it (the lowest threshold), else the default
    thresholds = [
        spec.replication.trust_threshold
        for spec in (
            JobSpec.model_validate(raw)
            for raw in (
                await session.exec(
                    select(Job.spec).where(col(Job.state).in_([JobState.pending, JobState.running]))
                )
            ).all()
        )
        if spec.replication.adaptive
    ]
    threshold = min(thresholds, default=trust.DEFAULT_TRUST_THRESHOLD)
    host_trust = [
        HostTrust(
            host_id=t.host_id,
            name=name,
            runtime=t.runtime,
            consecutive_valid=t.consecutive_valid,
            valid=t.valid,
            invalid=t.invalid,
            error=t.error,
            daily_quota=t.daily_quota,
            quota_used_today=t.quota_used_today if t.day == trust.day_of(now) else 0,
            trusted=trusted,
        )
        for t, name, trusted in await trust.trust_rows(session, threshold=threshold)
    ]
    return ServerStatus(
        hosts_total=hosts_total,
        hosts_active=hosts_active,
        jobs_running=jobs_running,
        results_unsent=by_state.get(ServerState.unsent, 0),
        results_in_progress=by_state.get(ServerState.in_progress, 0),
        results_over={str(k): int(v) for k, v in by_outcome.items()},
        results_last_hour=last_hour,
        daemons={
            name: (datetime.fromtimestamp(runs[name], tz=UTC) if name in runs else None)
            for name in DAEMONS
        },
        hosts_trusted=sum(1 for h in host_trust if h.trusted),
        host_trust=host_trust,
    )
