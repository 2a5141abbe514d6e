"""Per-host records, for the two readers allowed to see a host's name: the host itself
(``own_record``, ``GET /api/v1/hosts/me``) and the operators (``host_details``,
``GET /api/v1/hosts[/{id}]``). Public pages get counts from ``services.status`` instead.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.db.models import Host, HostRuntimeTrust, Job
from work_server.errors import NotFound
from work_server.host_status import HostDetail, RuntimeTrust
from work_server.job_spec import JobSpec
from work_server.services import trust
from work_server.services.jobs import ACTIVE_JOB_STATES
from yadml_common.wire import HostRecord


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


async def trust_threshold(session: AsyncSession) -> int:
    """The threshold at which reports call a pair trusted: the lowest of the running
    adaptive jobs' thresholds, else the default (a pair's record does not depend on the job,
    so reports use one figure)."""
    specs = (
        JobSpec.model_validate(raw)
        for raw in (
            await session.exec(select(Job.spec).where(col(Job.state).in_(ACTIVE_JOB_STATES)))
        ).all()
    )
    thresholds = [s.replication.trust_threshold for s in specs if s.replication.adaptive]
    return min(thresholds, default=trust.DEFAULT_TRUST_THRESHOLD)


def own_record(host: Host) -> HostRecord:
    """What a host may read about itself."""
    assert host.id is not None
    return HostRecord(
        host_id=host.id,
        name=host.name,
        display_name=host.display_name,
        os=host.os,
        arch=host.arch,
        cpus=host.cpus,
        memory_mb=host.memory_mb,
        runtimes=[str(r) for r in host.runtimes],
        created_at=_time(host.created_at),
        results_valid=host.results_valid,
        results_invalid=host.results_invalid,
        results_error=host.results_error,
        credit=host.credit,
    )


def _runtime_trust(t: HostRuntimeTrust, *, threshold: int, now: float) -> RuntimeTrust:
    return RuntimeTrust(
        runtime=t.runtime,
        consecutive_valid=t.consecutive_valid,
        valid=t.valid,
        invalid=t.invalid,
        error=t.error,
        daily_quota=t.daily_quota,
        # the row's count is of the day it was last used: another day's is no use today
        quota_used_today=t.quota_used_today if t.day == trust.day_of(now) else 0,
        trusted=trust.is_trusted(t.consecutive_valid, threshold),
    )


async def host_details(
    session: AsyncSession, *, now: float, host_id: int | None = None
) -> list[HostDetail]:
    """Every host (or the one ``host_id``), by id, with its trust per runtime."""
    hosts_stmt = select(Host).order_by(col(Host.id))
    trust_stmt = select(HostRuntimeTrust).order_by(col(HostRuntimeTrust.runtime))
    if host_id is not None:
        hosts_stmt = hosts_stmt.where(col(Host.id) == host_id)
        trust_stmt = trust_stmt.where(col(HostRuntimeTrust.host_id) == host_id)
    threshold = await trust_threshold(session)
    by_host: defaultdict[int, list[RuntimeTrust]] = defaultdict(list)
    for t in (await session.exec(trust_stmt)).all():
        by_host[t.host_id].append(_runtime_trust(t, threshold=threshold, now=now))
    details: list[HostDetail] = []
    for host in (await session.exec(hosts_stmt)).all():
        assert host.id is not None
        details.append(
            HostDetail(
                **own_record(host).model_dump(),
                last_contact=_time(host.last_contact),
                banned=host.banned,
                consecutive_valid=host.consecutive_valid,
                trust=by_host[host.id],
            )
        )
    return details


async def host_detail(session: AsyncSession, host_id: int, *, now: float) -> HostDetail:
    found = await host_details(session, now=now, host_id=host_id)
    if not found:
        raise NotFound(f"no host {host_id}")
    return found[0]
