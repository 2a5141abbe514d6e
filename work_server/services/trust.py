"""Host trust: BOINC's adaptive replication and daily quota, per (host, runtime).

Every (host, runtime) pair has a :class:`~work_server.db.models.HostRuntimeTrust` row (created
on its first claim) counting valid/invalid/error results and the **consecutive valid**
results since the last invalid or error one.

**Adaptive replication** (a job's ``replication.adaptive``): its work units start
unreplicated (``min_quorum = target_nresults = 1``). When a host claims one:

* a host that is *not trusted* for that runtime (fewer than ``trust_threshold`` consecutive
  valid results: new hosts, and every host right after an invalid or failed result) always
  gets a replicated unit: the unit's ``min_quorum``/``target_nresults`` are raised to
  ``adaptive_quorum`` (``max(2, replication.min_quorum)``), so the transitioner creates a
  replica that dispatch gives to a *different* host, and the validator compares them;
* a *trusted* host's unit stays unreplicated, except for a random **spot check** with
  probability ``spot_check_rate``, which replicates it the same way.

A unit, once replicated, stays replicated (a later trusted claim never lowers the quorum).

**Daily quota** (BOINC's ``max_results_day``, per runtime): ``max_daily_quota = QUOTA_PER_CPU
x cpus``, and each pair starts there. Every invalid result halves ``daily_quota`` (never below
1); every valid result doubles it again, up to the maximum. Dispatch hands a pair at most
``daily_quota`` units per UNIX day (``now // 86400``); beyond that the host gets no units
(and the usual ``retry_after_s``). Errors (client errors, no reply) reset
``consecutive_valid`` but leave the quota alone: a crashing host is unlucky, not lying.

Decisions are pure functions (tested without a database); the ``async`` helpers apply them
with conditional updates. None of the helpers commits.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import case, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.db.models import Host, HostRuntimeTrust, WorkUnit

#: daily quota per CPU of the host (maximum and starting value)
QUOTA_PER_CPU = 50
#: trust threshold used where no job says otherwise (``trusted`` in host reports)
DEFAULT_TRUST_THRESHOLD = 10
SECONDS_PER_DAY = 86400.0

Draw = Callable[[], float]


# ----------------------------------------------------------------------------- pure decisions


def is_trusted(consecutive_valid: int, threshold: int) -> bool:
    """A pair is trusted once it has ``threshold`` consecutive valid results."""
    return consecutive_valid >= threshold


def needs_replication(
    *, consecutive_valid: int, threshold: int, spot_check_rate: float, draw: float
) -> bool:
    """Whether a claim of an adaptive unit must be replicated. ``draw`` is uniform in [0, 1)."""
    if not is_trusted(consecutive_valid, threshold):
        return True
    return draw < spot_check_rate


def adaptive_quorum(min_quorum: int) -> int:
    """The quorum a replicated adaptive unit gets."""
    return max(2, min_quorum)


def max_daily_quota(cpus: int) -> int:
    return QUOTA_PER_CPU * max(1, cpus)


def quota_after_valid(quota: int, maximum: int) -> int:
    return min(maximum, max(1, quota) * 2)


def quota_after_invalid(quota: int) -> int:
    return max(1, quota // 2)


def day_of(now: float) -> int:
    return int(now // SECONDS_PER_DAY)


def quota_left(*, daily_quota: int, used: int, day: int, today: int) -> int:
    """Units the pair may still get today (the count restarts each day)."""
    return daily_quota - (used if day == today else 0)


@dataclass(frozen=True)
class AdaptiveDecision:
    replicate: bool
    trusted: bool
    spot_check: bool


def decide_claim(
    *, consecutive_valid: int, threshold: int, spot_check_rate: float, draw: float
) -> AdaptiveDecision:
    trusted = is_trusted(consecutive_valid, threshold)
    replicate = needs_replication(
        consecutive_valid=consecutive_valid,
        threshold=threshold,
        spot_check_rate=spot_check_rate,
        draw=draw,
    )
    return AdaptiveDecision(replicate=replicate, trusted=trusted, spot_check=trusted and replicate)


# ----------------------------------------------------------------------------- database


def _where(host_id: int, runtime: str) -> tuple[object, object]:
    return (col(HostRuntimeTrust.host_id) == host_id, col(HostRuntimeTrust.runtime) == runtime)


async def get_trust(
    session: AsyncSession, host_id: int, runtime: str, *, cpus: int = 1
) -> HostRuntimeTrust:
    """The pair's row, created (at the full quota) if missing. Race-safe: a concurrent
    insert of the same pair is caught in a savepoint and the existing row is read."""
    row = await session.get(HostRuntimeTrust, (host_id, runtime), populate_existing=True)
    if row is not None:
        return row
    quota = max_daily_quota(cpus)
    try:
        async with session.begin_nested():
            session.add(
                HostRuntimeTrust(
                    host_id=host_id, runtime=runtime, daily_quota=quota, max_daily_quota=quota
                )
            )
    except IntegrityError:
        pass
    row = await session.get(HostRuntimeTrust, (host_id, runtime), populate_existing=True)
    assert row is not None
    return row


async def _cpus(session: AsyncSession, host_id: int) -> int:
    cpus = (await session.exec(select(Host.cpus).where(col(Host.id) == host_id))).one_or_none()
    return int(cpus or 1)


async def record_valid(session: AsyncSession, host_id: int | None, runtime: str | None) -> None:
    if host_id is None or runtime is None:
        return
    await get_trust(session, host_id, runtime, cpus=await _cpus(session, host_id))
    doubled = col(HostRuntimeTrust.daily_quota) * 2
    await session.exec(
        update(HostRuntimeTrust)
        .where(*_where(host_id, runtime))  # type: ignore[arg-type]
        .values(
            valid=col(HostRuntimeTrust.valid) + 1,
            consecutive_valid=col(HostRuntimeTrust.consecutive_valid) + 1,
            daily_quota=case(
                (doubled > col(HostRuntimeTrust.max_daily_quota), HostRuntimeTrust.max_daily_quota),
                else_=doubled,
            ),
        )
        .execution_options(synchronize_session=False)
    )


async def record_invalid(session: AsyncSession, host_id: int | None, runtime: str | None) -> None:
    if host_id is None or runtime is None:
        return
    await get_trust(session, host_id, runtime, cpus=await _cpus(session, host_id))
    halved = col(HostRuntimeTrust.daily_quota) // 2
    await session.exec(
        update(HostRuntimeTrust)
        .where(*_where(host_id, runtime))  # type: ignore[arg-type]
        .values(
            invalid=col(HostRuntimeTrust.invalid) + 1,
            consecutive_valid=0,
            daily_quota=case((halved < 1, 1), else_=halved),
        )
        .execution_options(synchronize_session=False)
    )


async def unrecord_valid(session: AsyncSession, host_id: int | None, runtime: str | None) -> None:
    """A result the validator counted valid was rejected later (screening): take the valid
    count back (the caller then records it invalid), so it is counted once."""
    if host_id is None or runtime is None:
        return
    await session.exec(
        update(HostRuntimeTrust)
        .where(*_where(host_id, runtime), col(HostRuntimeTrust.valid) > 0)  # type: ignore[arg-type]
        .values(valid=col(HostRuntimeTrust.valid) - 1)
        .execution_options(synchronize_session=False)
    )


async def record_error(session: AsyncSession, host_id: int | None, runtime: str | None) -> None:
    if host_id is None or runtime is None:
        return
    await get_trust(session, host_id, runtime, cpus=await _cpus(session, host_id))
    await session.exec(
        update(HostRuntimeTrust)
        .where(*_where(host_id, runtime))  # type: ignore[arg-type]
        .values(error=col(HostRuntimeTrust.error) + 1, consecutive_valid=0)
        .execution_options(synchronize_session=False)
    )


async def unrecord_error(session: AsyncSession, host_id: int | None, runtime: str | None) -> None:
    """A result counted as no_reply arrived after all (a late upload): take the error back.
    ``consecutive_valid`` is not restored; the validator judges the result itself."""
    if host_id is None or runtime is None:
        return
    await session.exec(
        update(HostRuntimeTrust)
        .where(*_where(host_id, runtime), col(HostRuntimeTrust.error) > 0)  # type: ignore[arg-type]
        .values(error=col(HostRuntimeTrust.error) - 1)
        .execution_options(synchronize_session=False)
    )


async def quota_left_today(session: AsyncSession, host: Host, runtime: str, now: float) -> int:
    """How many units the pair may still take today (its row is created if missing)."""
    assert host.id is not None
    row = await get_trust(session, host.id, runtime, cpus=host.cpus)
    left = quota_left(
        daily_quota=row.daily_quota, used=row.quota_used_today, day=row.day, today=day_of(now)
    )
    return max(0, left)


async def take_quota_n(session: AsyncSession, host: Host, runtime: str, n: int, now: float) -> bool:
    """Count ``n`` units against the pair's daily quota in one conditional UPDATE; False
    (nothing changed) when fewer than ``n`` are left, e.g. after a concurrent claim."""
    assert host.id is not None
    today = day_of(now)
    used = col(HostRuntimeTrust.quota_used_today)
    taken = await session.exec(
        update(HostRuntimeTrust)
        .where(
            *_where(host.id, runtime),  # type: ignore[arg-type]
            ((col(HostRuntimeTrust.day) != today) & (n <= col(HostRuntimeTrust.daily_quota)))
            | (used + n <= col(HostRuntimeTrust.daily_quota)),
        )
        .values(
            quota_used_today=case((col(HostRuntimeTrust.day) == today, used + n), else_=n),
            day=today,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(taken.rowcount == 1)


async def give_back_quota(session: AsyncSession, host_id: int, runtime: str, n: int = 1) -> None:
    """Undo part of :func:`take_quota_n` (claims lost to concurrent ones)."""
    used = col(HostRuntimeTrust.quota_used_today)
    await session.exec(
        update(HostRuntimeTrust)
        .where(*_where(host_id, runtime))  # type: ignore[arg-type]
        .values(quota_used_today=case((used > n, used - n), else_=0))
        .execution_options(synchronize_session=False)
    )


async def apply_adaptive(
    session: AsyncSession,
    wu: WorkUnit,
    host: Host,
    runtime: str,
    now: float,
    *,
    draw: Draw = random.random,
) -> AdaptiveDecision | None:
    """At claim time of an adaptive unit: replicate it if the host is not trusted (or for a
    spot check). Returns the decision, or None for a unit that is not adaptive."""
    if not wu.adaptive:
        return None
    assert host.id is not None
    assert wu.id is not None
    trust = await get_trust(session, host.id, runtime, cpus=host.cpus)
    decision = decide_claim(
        consecutive_valid=trust.consecutive_valid,
        threshold=wu.trust_threshold,
        spot_check_rate=wu.spot_check_rate,
        draw=draw(),
    )
    if decision.replicate:
        quorum = wu.adaptive_quorum
        await session.exec(
            update(WorkUnit)
            .where(col(WorkUnit.id) == wu.id, col(WorkUnit.min_quorum) < quorum)
            .values(
                min_quorum=quorum,
                target_nresults=case(
                    (col(WorkUnit.target_nresults) < quorum, quorum),
                    else_=col(WorkUnit.target_nresults),
                ),
                max_total_results=case(
                    (col(WorkUnit.max_total_results) < quorum + 1, quorum + 1),
                    else_=col(WorkUnit.max_total_results),
                ),
                transition_time=now,  # the transitioner creates the replica now
            )
            .execution_options(synchronize_session=False)
        )
    return decision
