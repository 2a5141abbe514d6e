"""Server status as data: what BOINC's server-status page shows.

Two views of the same counts: ``server_status`` is the JSON API's ``ServerStatus`` (and feeds
``/metrics``); ``status_overview`` is what the public ``/server-status`` web page shows
(daemon errors, work-unit and blob figures too). Both count through the helpers here, so
the API and the page always agree on what "unsent" or "jobs running" means.

Both are public, so they hold counts and aggregates only: no host's name, id or per-host row
(a volunteer's name is for the operators and the host itself: ``services.host_records``).
The one exception is by the volunteer's choice: ``top_volunteers`` lists the hosts with a
public display name, by that name and their credit, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.daemons.roster import DAEMON_NAMES
from work_server.db.models import (
    Blob,
    DaemonRun,
    Host,
    HostRuntimeTrust,
    Job,
    Result,
    ServerState,
    WorkUnit,
    WorkUnitState,
)
from work_server.services import host_records
from work_server.services.jobs import ACTIVE_JOB_STATES
from yadml_common.wire import PublicVolunteer, ServerStatus

HOUR_S = 3600.0
DAY_S = 86400.0
#: how many volunteers the public "top volunteers by credit" list shows
TOP_VOLUNTEERS = 10


async def _count(session: AsyncSession, stmt: Any) -> int:
    return int((await session.exec(stmt)).one() or 0)


async def _results_by_state(session: AsyncSession) -> dict[Any, int]:
    rows = await session.exec(
        select(Result.server_state, func.count()).group_by(col(Result.server_state))
    )
    return {state: int(n) for state, n in rows.all()}


async def _results_received_since(session: AsyncSession, since: float) -> int:
    return await _count(
        session, select(func.count()).select_from(Result).where(col(Result.received_at) >= since)
    )


async def _hosts_total(session: AsyncSession) -> int:
    return await _count(session, select(func.count()).select_from(Host))


async def _jobs_running(session: AsyncSession) -> int:
    return await _count(
        session,
        select(func.count()).select_from(Job).where(col(Job.state).in_(ACTIVE_JOB_STATES)),
    )


async def _daemon_runs(session: AsyncSession) -> dict[str, DaemonRun]:
    return {d.name: d for d in (await session.exec(select(DaemonRun))).all()}


async def _trusted_pairs(session: AsyncSession) -> int:
    threshold = await host_records.trust_threshold(session)
    return await _count(
        session,
        select(func.count())
        .select_from(HostRuntimeTrust)
        .where(col(HostRuntimeTrust.consecutive_valid) >= threshold),
    )


async def top_volunteers(
    session: AsyncSession, limit: int = TOP_VOLUNTEERS
) -> list[PublicVolunteer]:
    """The hosts with the most credit among those whose volunteers chose a public display
    name (banned hosts left out): that name and the credit, nothing else."""
    rows = await session.exec(
        select(Host.display_name, Host.credit)
        .where(col(Host.display_name).is_not(None), col(Host.banned).is_(False))
        .order_by(col(Host.credit).desc(), col(Host.id))
        .limit(limit)
    )
    return [
        PublicVolunteer(display_name=name, credit=credit) for name, credit in rows.all() if name
    ]


async def server_status(
    session: AsyncSession, *, now: float, active_window_s: float
) -> ServerStatus:
    hosts_active = await _count(
        session,
        select(func.count())
        .select_from(Host)
        .where(Host.last_contact >= now - active_window_s, col(Host.banned).is_(False)),
    )
    by_state = await _results_by_state(session)
    by_outcome = dict(
        (
            await session.exec(
                select(Result.outcome, func.count())
                .where(Result.server_state == ServerState.over)
                .group_by(col(Result.outcome))
            )
        ).all()
    )
    runs = await _daemon_runs(session)
    return ServerStatus(
        hosts_total=await _hosts_total(session),
        hosts_active=hosts_active,
        jobs_running=await _jobs_running(session),
        results_unsent=by_state.get(ServerState.unsent, 0),
        results_in_progress=by_state.get(ServerState.in_progress, 0),
        results_over={str(k): int(v) for k, v in by_outcome.items()},
        results_last_hour=await _results_received_since(session, now - HOUR_S),
        daemons={
            name: (datetime.fromtimestamp(runs[name].last_run, tz=UTC) if name in runs else None)
            for name in DAEMON_NAMES
        },
        hosts_trusted=await _trusted_pairs(session),
        top_volunteers=await top_volunteers(session),
    )


@dataclass
class DaemonRow:
    name: str
    last_run: float | None
    last_error: str | None


@dataclass
class StatusOverview:
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
    top_volunteers: list[PublicVolunteer]


async def status_overview(session: AsyncSession, *, now: float) -> StatusOverview:
    """The public server-status page's figures; daemons that are not in the roster but
    left a run row (one since renamed) are listed after the roster's."""
    runs = await _daemon_runs(session)
    names = list(DAEMON_NAMES) + sorted(set(runs) - set(DAEMON_NAMES))
    daemons = [
        DaemonRow(
            name=n,
            last_run=runs[n].last_run if n in runs else None,
            last_error=runs[n].last_error if n in runs else None,
        )
        for n in names
    ]
    by_state = await _results_by_state(session)
    wu_active = await _count(
        session,
        select(func.count()).select_from(WorkUnit).where(WorkUnit.state == WorkUnitState.active),
    )
    wu_validate = await _count(
        session,
        select(func.count())
        .select_from(WorkUnit)
        .where(col(WorkUnit.need_validate).is_(True), WorkUnit.state == WorkUnitState.active),
    )
    hosts_day = await _count(
        session, select(func.count()).select_from(Host).where(Host.last_contact >= now - DAY_S)
    )
    blob_count, blob_bytes = (
        await session.exec(select(func.count(), func.coalesce(func.sum(Blob.size), 0)))
    ).one()
    return StatusOverview(
        daemons=daemons,
        results_unsent=by_state.get(ServerState.unsent, 0),
        results_in_progress=by_state.get(ServerState.in_progress, 0),
        workunits_active=wu_active,
        workunits_need_validate=wu_validate,
        results_last_hour=await _results_received_since(session, now - HOUR_S),
        results_last_day=await _results_received_since(session, now - DAY_S),
        hosts_total=await _hosts_total(session),
        hosts_active_day=hosts_day,
        jobs_running=await _jobs_running(session),
        blob_count=int(blob_count),
        blob_bytes=int(blob_bytes),
        top_volunteers=await top_volunteers(session),
    )
