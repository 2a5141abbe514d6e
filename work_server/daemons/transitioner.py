"""Transitioner: moves work units along (BOINC ``sched/transitioner.cpp``).

For every work unit whose ``transition_time <= now``:

1. in-progress results past their ``deadline`` become ``over/no_reply`` (their host's
   ``results_error`` goes up once: the update is conditional on ``in_progress``, and a late
   upload later turns the result into ``over/success`` without ever making it in-progress
   again, so it is never counted twice);
2. an ``active`` work unit fails when it has more than ``max_error_results`` errors, or when
   it has ``max_total_results`` results and nothing pending (no unsent or in-progress result,
   no success awaiting validation);
3. otherwise unsent results are created until unsent + in-progress + successes that are
   valid or not yet judged (``init``/``inconclusive``) reach ``target_nresults``, never more
   than ``max_total_results`` results in all. Results revoked by a ban (``error_reason =
   'host_banned'``, ``services.hosts``) count in neither limit: the work unit did nothing
   wrong, so a ban never fails it, it only gets replacements;
4. ``need_validate`` is set when there is a new (``init``) success and, for an active work
   unit, ``init + inconclusive`` successes reach ``min_quorum`` (a finished work unit's new
   successes are validated against its canonical result, for credit);
5. a ``done``/``failed``/``cancelled`` work unit's unsent results become ``over/didnt_need``,
   and so do its in-progress ones when it was cancelled or its job's work is over (a round
   of the job failed or was cancelled). This happens first, before any timeout: the
   transitioner is the only daemon that retires results; the round closer just cancels
   work units and asks for a look (``transition_time = now``);
6. ``transition_time`` becomes the earliest in-progress deadline, or ``FAR_FUTURE``.

All state changes are conditional ``UPDATE`` statements, so a concurrent dispatch or upload
by the API is never overwritten: at worst the work unit is looked at again on the next run.
"""

from __future__ import annotations

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.daemons import drain, fresh_workunit, record_run
from work_server.db.models import (
    FAR_FUTURE,
    Host,
    Outcome,
    Result,
    Round,
    RoundState,
    ServerState,
    ValidateState,
    WorkUnit,
    WorkUnitState,
)
from work_server.services import trust
from work_server.services.hosts import BANNED

NAME = "transitioner"

#: Outcomes that count against ``max_error_results``.
ERROR_OUTCOMES = frozenset({Outcome.client_error, Outcome.no_reply, Outcome.validate_error})
#: Validate states of a success that still counts towards ``target_nresults``.
LIVE_SUCCESS_STATES = frozenset(
    {ValidateState.init, ValidateState.inconclusive, ValidateState.valid}
)
#: A job with a round in one of these states is over: its results still out are retired.
ENDED_ROUND_STATES = (RoundState.failed, RoundState.cancelled)


async def run_once(session: AsyncSession, now: float, *, batch_size: int = 200) -> int:
    """Transition every work unit that is due at ``now``; one transaction per work unit."""
    due = (
        select(WorkUnit.id)
        .where(col(WorkUnit.transition_time) <= now)
        .order_by(col(WorkUnit.transition_time), col(WorkUnit.id))
        .limit(batch_size)
    )

    async def handle(wu_id: int) -> None:
        await transition(session, wu_id, now)

    handled = await drain(session, due, handle)
    await record_run(session, NAME, now)
    return handled


async def transition(session: AsyncSession, wu_id: int, now: float) -> None:
    """One work unit's transition (no commit)."""
    wu = await fresh_workunit(session, wu_id)
    if wu is None:
        return
    old_transition_time = wu.transition_time

    # 0. results nobody needs any more are retired first, so none of them times out instead
    if wu.state != WorkUnitState.active:
        await _retire_unneeded(session, wu)

    # 1. timeouts
    timed_out = (
        await session.exec(
            select(Result.id, Result.host_id, Result.runtime).where(
                col(Result.workunit_id) == wu_id,
                col(Result.server_state) == ServerState.in_progress,
                col(Result.deadline) <= now,
            )
        )
    ).all()
    for result_id, host_id, runtime in timed_out:
        changed = await session.exec(
            update(Result)
            .where(
                col(Result.id) == result_id,
                col(Result.server_state) == ServerState.in_progress,
            )
            .values(server_state=ServerState.over, outcome=Outcome.no_reply)
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount == 1 and host_id is not None:
            await session.exec(
                update(Host)
                .where(col(Host.id) == host_id)
                .values(results_error=col(Host.results_error) + 1, consecutive_valid=0)
                .execution_options(synchronize_session=False)
            )
            await trust.record_error(session, host_id, runtime)

    results = (
        await session.exec(
            select(Result)
            .where(col(Result.workunit_id) == wu_id)
            .execution_options(populate_existing=True)
        )
    ).all()
    # a ban's revoked results are no fault of the work unit: they count against no limit
    counted = [r for r in results if r.error_reason != BANNED]
    unsent = sum(1 for r in results if r.server_state == ServerState.unsent)
    in_progress = sum(1 for r in results if r.server_state == ServerState.in_progress)
    successes = [r for r in results if r.outcome == Outcome.success]
    new_successes = sum(1 for r in successes if r.validate_state == ValidateState.init)
    pending_successes = new_successes + sum(
        1 for r in successes if r.validate_state == ValidateState.inconclusive
    )
    live_successes = sum(1 for r in successes if r.validate_state in LIVE_SUCCESS_STATES)
    errors = sum(1 for r in counted if r.outcome in ERROR_OUTCOMES)
    state = wu.state
    need_validate = wu.need_validate

    # 2./3. an active work unit: give up, or ask for more results
    if state == WorkUnitState.active:
        reason: str | None = None
        if errors > wu.max_error_results:
            reason = f"too many errors ({errors} > max_error_results={wu.max_error_results})"
        elif (
            len(counted) >= wu.max_total_results
            and unsent + in_progress + new_successes == 0
            and not need_validate
        ):
            reason = (
                f"too many results ({len(counted)} >= max_total_results="
                f"{wu.max_total_results}) without a canonical result"
            )
        if reason is not None:
            failed = await session.exec(
                update(WorkUnit)
                .where(col(WorkUnit.id) == wu_id, col(WorkUnit.state) == WorkUnitState.active)
                .values(state=WorkUnitState.failed, error=reason, need_validate=False)
                .execution_options(synchronize_session=False)
            )
            if failed.rowcount == 1:
                state = WorkUnitState.failed
        else:
            wanted = wu.target_nresults - (unsent + in_progress + live_successes)
            room = wu.max_total_results - len(counted)
            for _ in range(max(0, min(wanted, room))):
                session.add(Result(workunit_id=wu_id, created_at=now))
            if new_successes > 0 and pending_successes >= wu.min_quorum:
                need_validate = True
    elif new_successes > 0:
        # late successes of a finished work unit: checked against the canonical for credit
        need_validate = True

    if need_validate and not wu.need_validate:
        await session.exec(
            update(WorkUnit)
            .where(col(WorkUnit.id) == wu_id)
            .values(need_validate=True)
            .execution_options(synchronize_session=False)
        )

    # 5. a work unit that failed just now needs no more results
    if state != WorkUnitState.active and unsent:
        await _retire(session, wu_id, (ServerState.unsent,))
    await session.flush()

    # 6. next look: the earliest in-progress deadline. Computed by the database in the same
    # statement, and only if nobody (an upload) asked for an earlier look meanwhile.
    earliest = (
        select(func.min(Result.deadline))
        .where(
            col(Result.workunit_id) == wu_id,
            col(Result.server_state) == ServerState.in_progress,
        )
        .scalar_subquery()
    )
    await session.exec(
        update(WorkUnit)
        .where(
            col(WorkUnit.id) == wu_id,
            col(WorkUnit.transition_time) == old_transition_time,
        )
        .values(transition_time=func.coalesce(earliest, FAR_FUTURE))
        .execution_options(synchronize_session=False)
    )


async def _retire_unneeded(session: AsyncSession, wu: WorkUnit) -> None:
    """A finished work unit's unsent results; also its in-progress ones when it was
    cancelled or its job's work is over (a round of the job failed or was cancelled: the
    round closer then hands every work unit of the job with results out to us). A done work
    unit's in-progress replicas otherwise go on: they are validated for credit."""
    assert wu.id is not None
    if wu.state == WorkUnitState.cancelled:
        await _retire(session, wu.id, (ServerState.unsent, ServerState.in_progress))
        return
    job_over = (
        await session.exec(
            select(func.count())
            .select_from(Round)
            .where(col(Round.job_id) == wu.job_id, col(Round.state).in_(ENDED_ROUND_STATES))
        )
    ).one()
    states = (ServerState.unsent, ServerState.in_progress) if job_over else (ServerState.unsent,)
    await _retire(session, wu.id, states)


async def _retire(session: AsyncSession, wu_id: int, states: tuple[ServerState, ...]) -> None:
    """The work unit's results in ``states`` -> ``over/didnt_need`` (the only place that
    retires results)."""
    await session.exec(
        update(Result)
        .where(col(Result.workunit_id) == wu_id, col(Result.server_state).in_(states))
        .values(server_state=ServerState.over, outcome=Outcome.didnt_need)
        .execution_options(synchronize_session=False)
    )
