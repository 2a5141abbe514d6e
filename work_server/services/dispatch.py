"""Dispatch ("the scheduler" in BOINC terms): hand unsent results to a host.

Claims are atomic: a result moves from ``unsent`` to ``in_progress`` by a conditional
``UPDATE ... WHERE server_state = 'unsent'``, so two server processes (or two concurrent
requests) can never hand out the same result.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import case, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.db.models import (
    Host,
    Job,
    JobState,
    Result,
    Round,
    ServerState,
    WorkUnit,
    WorkUnitState,
)
from work_server.services import trust
from yadml_common.wire import Runtime

#: how many candidates to look at per requested unit (filters happen in Python)
_CANDIDATES_PER_UNIT = 32


@dataclass(frozen=True)
class Claimed:
    result_id: int
    deadline: float
    runtime: str
    workunit: WorkUnit
    round_number: int


async def claim_work(
    session: AsyncSession,
    host: Host,
    *,
    max_units: int,
    runtimes: list[Runtime] | None,
    now: float,
    draw: Callable[[], float] = random.random,
) -> list[Claimed]:
    """Atomically assign up to ``max_units`` unsent results to ``host``.

    Each claim counts against the (host, runtime) daily quota; a spent quota means no unit
    of that runtime. A claimed adaptive unit is replicated when the host is not trusted or a
    spot check (``draw() < spot_check_rate``) says so (``work_server.services.trust``).
    """
    offered = [r for r in (runtimes or host.runtimes) if r in host.runtimes]
    if not offered:
        await session.commit()
        return []
    held_wus = set(
        (
            await session.exec(
                select(Result.workunit_id)
                .join(WorkUnit, col(WorkUnit.id) == Result.workunit_id)
                .where(Result.host_id == host.id, WorkUnit.state == WorkUnitState.active)
            )
        ).all()
    )
    rows = (
        await session.exec(
            select(Result, WorkUnit, Round.number)
            .join(WorkUnit, col(WorkUnit.id) == Result.workunit_id)
            .join(Round, col(Round.id) == WorkUnit.round_id)
            .join(Job, col(Job.id) == WorkUnit.job_id)
            .where(
                Result.server_state == ServerState.unsent,
                WorkUnit.state == WorkUnitState.active,
                Job.state == JobState.running,
            )
            .order_by(col(Result.id))
            .limit(max_units * _CANDIDATES_PER_UNIT)
        )
    ).all()
    claimed: list[Claimed] = []
    spent: set[str] = set()  # runtimes whose daily quota is used up
    for result, wu, round_number in rows:
        if len(claimed) >= max_units:
            break
        if wu.id in held_wus:
            continue  # replicas of one work unit go to distinct hosts
        runtime = next((r for r in offered if r in wu.runtimes and r not in spent), None)
        if runtime is None:
            continue
        if not await trust.take_quota(session, host, runtime, now):
            spent.add(runtime)
            continue
        deadline = now + wu.delay_bound_s
        res = await session.exec(
            update(Result)
            .where(col(Result.id) == result.id, col(Result.server_state) == ServerState.unsent)
            .values(
                server_state=ServerState.in_progress,
                host_id=host.id,
                sent_at=now,
                deadline=deadline,
                runtime=runtime,
            )
            .execution_options(synchronize_session=False)  # nothing to sync: saves CPU
        )
        if res.rowcount != 1:
            assert host.id is not None
            await trust.give_back_quota(session, host.id, runtime)
            continue  # somebody else got it first
        await trust.apply_adaptive(session, wu, host, runtime, now, draw=draw)
        await session.exec(
            update(WorkUnit)
            .where(col(WorkUnit.id) == wu.id)
            .values(
                transition_time=case(
                    (col(WorkUnit.transition_time) > deadline, deadline),
                    else_=col(WorkUnit.transition_time),
                )
            )
            .execution_options(synchronize_session=False)
        )
        assert result.id is not None and wu.id is not None
        held_wus.add(wu.id)
        claimed.append(Claimed(result.id, deadline, runtime, wu, round_number))
    await session.commit()
    return claimed
