"""Dispatch ("the scheduler" in BOINC terms): hand unsent results to a host.

Claims are atomic: a result moves from ``unsent`` to ``in_progress`` by a conditional
``UPDATE ... WHERE server_state = 'unsent'``, so two server processes (or two concurrent
requests) can never hand out the same result.
"""

from __future__ import annotations

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
) -> list[Claimed]:
    """Atomically assign up to ``max_units`` unsent results to ``host``."""
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
    for result, wu, round_number in rows:
        if len(claimed) >= max_units:
            break
        if wu.id in held_wus:
            continue  # replicas of one work unit go to distinct hosts
        runtime = next((r for r in offered if r in wu.runtimes), None)
        if runtime is None:
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
        )
        if res.rowcount != 1:
            continue  # somebody else got it first
        await session.exec(
            update(WorkUnit)
            .where(col(WorkUnit.id) == wu.id)
            .values(
                transition_time=case(
                    (col(WorkUnit.transition_time) > deadline, deadline),
                    else_=col(WorkUnit.transition_time),
                )
            )
        )
        assert result.id is not None and wu.id is not None
        held_wus.add(wu.id)
        claimed.append(Claimed(result.id, deadline, runtime, wu, round_number))
    await session.commit()
    return claimed
