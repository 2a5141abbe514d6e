"""Dispatch ("the scheduler" in BOINC terms): hand unsent results to a host.

Claims are atomic: a result moves from ``unsent`` to ``in_progress`` by a conditional
``UPDATE ... WHERE server_state = 'unsent'``, so two server processes (or two concurrent
requests) can never hand out the same result.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass

from sqlalchemy import tuple_, update
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

#: at most how many candidates to look at per requested unit (filters happen in Python)
_CANDIDATES_PER_UNIT = 32


#: an unsent result, its work unit and its round's number
_Candidate = tuple[Result, WorkUnit, int]


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
    # choose: distinct work units, a runtime each, within each runtime's quota left today
    left: dict[str, int] = {}
    by_runtime: dict[str, list[_Candidate]] = {}
    chosen = 0
    async with aclosing(_candidates(session, max_units)) as candidates:
        async for result, wu, round_number in candidates:
            if chosen >= max_units:
                break
            if wu.id in held_wus:
                continue  # replicas of one work unit go to distinct hosts
            runtime = None
            for r in offered:
                if r not in wu.runtimes:
                    continue
                if r not in left:
                    left[r] = await trust.quota_left_today(session, host, r, now)
                if left[r] > 0:
                    runtime = r
                    break
            if runtime is None:
                continue
            left[runtime] -= 1
            assert wu.id is not None
            held_wus.add(wu.id)
            by_runtime.setdefault(runtime, []).append((result, wu, round_number))
            chosen += 1
    claimed: list[Claimed] = []
    for runtime, items in by_runtime.items():
        claimed += await _claim_batch(session, host, runtime, items, now=now, draw=draw)
    await session.commit()
    return claimed


async def _candidates(session: AsyncSession, max_units: int) -> AsyncGenerator[_Candidate]:
    """Unsent results of running jobs, oldest work unit first (a reissued replica of an old
    unit goes before new units, as in BOINC), in small pages: most requests are served
    from the first page, and loading ORM rows nobody takes is the main cost here."""
    page = max(8, 2 * max_units)
    after = (0, 0)  # keyset (workunit_id, id): walks index ix_result_dispatch, no sort
    for _ in range(_CANDIDATES_PER_UNIT * max_units // page):
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
                    tuple_(col(Result.workunit_id), col(Result.id)) > tuple_(*after),
                )
                .order_by(col(Result.workunit_id), col(Result.id))
                .limit(page)
                # PostgreSQL: rows another request (of any server process) is claiming are
                # skipped, not waited for; SQLite (one writer) ignores this
                .with_for_update(of=Result, skip_locked=True)
            )
        ).all()
        for row in rows:
            yield row[0], row[1], row[2]
        if len(rows) < page:
            return
        last = rows[-1][0]
        after = (last.workunit_id, last.id or 0)


async def _claim_batch(
    session: AsyncSession,
    host: Host,
    runtime: str,
    items: list[_Candidate],
    *,
    now: float,
    draw: Callable[[], float],
) -> list[Claimed]:
    """Claim ``items`` for ``host`` in a few statements: quota for all of them at once, one
    conditional UPDATE per deadline (``... WHERE server_state = 'unsent' RETURNING id``: the
    rows another request or process got first are simply not returned) and one
    ``transition_time`` UPDATE per deadline, then the quota of the lost ones is given back."""
    assert host.id is not None
    if not await trust.take_quota_n(session, host, runtime, len(items), now):
        return []  # a concurrent claim used the quota up meanwhile
    by_deadline: dict[float, list[_Candidate]] = {}
    for item in items:
        by_deadline.setdefault(now + item[1].delay_bound_s, []).append(item)
    claimed: list[Claimed] = []
    for deadline, group in by_deadline.items():
        rows = await session.exec(
            update(Result)
            .where(
                col(Result.id).in_([r.id for r, _, _ in group]),
                col(Result.server_state) == ServerState.unsent,
            )
            .values(
                server_state=ServerState.in_progress,
                host_id=host.id,
                sent_at=now,
                deadline=deadline,
                runtime=runtime,
            )
            .returning(col(Result.id))
            .execution_options(synchronize_session=False)  # nothing to sync: saves CPU
        )
        won = set(rows.scalars().all())
        mine = [(r, wu, n) for r, wu, n in group if r.id in won]  # the others: got first
        for result, wu, round_number in mine:
            await trust.apply_adaptive(session, wu, host, runtime, now, draw=draw)
            assert result.id is not None
            claimed.append(Claimed(result.id, deadline, runtime, wu, round_number))
        if mine:
            await session.exec(
                update(WorkUnit)
                .where(
                    col(WorkUnit.id).in_([wu.id for _, wu, _ in mine]),
                    col(WorkUnit.transition_time) > deadline,
                )
                .values(transition_time=deadline)
                .execution_options(synchronize_session=False)
            )
    if len(claimed) < len(items):
        await trust.give_back_quota(session, host.id, runtime, len(items) - len(claimed))
    return claimed
