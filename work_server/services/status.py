"""Server status: what BOINC's server-status page shows, as data."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.db.models import DaemonRun, Host, Job, JobState, Result, ServerState
from yadml_common.wire import ServerStatus

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
    )
