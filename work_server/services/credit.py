"""Credit and the host counters of judged results: the one place that grants them and takes
them back (used by the validator, the round closer's screening and host bans).

* a result judged **valid** earns :func:`result_credit` (``num_samples * local_epochs /
  1000``: the work unit's own numbers, not the volunteer's report); its host gets
  ``results_valid + 1``, ``consecutive_valid + 1`` and the credit, and its (host, runtime)
  trust row :func:`~work_server.services.trust.record_valid`;
* a result judged **invalid**: ``results_invalid + 1``, ``consecutive_valid = 0``, and
  :func:`~work_server.services.trust.record_invalid`;
* a result that was valid (and credited) and is **later found invalid** (screened out of the
  merge by the round closer) gets its valid count and its credit taken back, then is counted
  invalid: :func:`invalidate` does the result's change and the counters together.

Exactly once: every caller changes the result with a conditional ``UPDATE`` and applies the
counters only when that update changed the row, so a second pass (or a concurrent one)
changes nothing. The credit taken back is recomputed from the work unit, which never
changes, so it is exactly the credit granted. None of the helpers commits.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import case, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.db.models import Host, Outcome, Result, ValidateState, WorkUnit
from work_server.services import trust

#: credit per trained sample-epoch
CREDIT_PER_SAMPLE_EPOCH = 1.0 / 1000.0

#: ``Result.error_reason`` of a canonical result the round closer's screening left out
SCREENED = "screened"

#: the states of a success that :func:`invalidate` may change by default
SUCCESS_STATES = (ValidateState.init, ValidateState.inconclusive, ValidateState.valid)


def result_credit(num_samples: int, task: Mapping[str, Any]) -> float:
    """What a valid result of a work unit with these ``num_samples`` and task earns."""
    return num_samples * int(task.get("local_epochs", 1)) * CREDIT_PER_SAMPLE_EPOCH


async def count_valid(
    session: AsyncSession, host_id: int | None, runtime: str | None, credit: float
) -> None:
    """A result of the host became valid: counters up, ``credit`` granted."""
    if host_id is None:
        return
    await session.exec(
        update(Host)
        .where(col(Host.id) == host_id)
        .values(
            results_valid=col(Host.results_valid) + 1,
            consecutive_valid=col(Host.consecutive_valid) + 1,
            credit=col(Host.credit) + credit,
        )
        .execution_options(synchronize_session=False)
    )
    await trust.record_valid(session, host_id, runtime)


async def count_invalid(session: AsyncSession, host_id: int | None, runtime: str | None) -> None:
    """A result of the host became invalid."""
    if host_id is None:
        return
    await session.exec(
        update(Host)
        .where(col(Host.id) == host_id)
        .values(results_invalid=col(Host.results_invalid) + 1, consecutive_valid=0)
        .execution_options(synchronize_session=False)
    )
    await trust.record_invalid(session, host_id, runtime)


async def revoke_valid(
    session: AsyncSession, host_id: int | None, runtime: str | None, credit: float
) -> None:
    """Undo :func:`count_valid`'s count and credit (never below zero). The consecutive
    count and quota are left to :func:`count_invalid`, which the caller applies next."""
    if host_id is None:
        return
    valid = col(Host.results_valid)
    earned = col(Host.credit)
    await session.exec(
        update(Host)
        .where(col(Host.id) == host_id)
        .values(
            results_valid=case((valid > 0, valid - 1), else_=0),
            credit=case((earned > credit, earned - credit), else_=0.0),
        )
        .execution_options(synchronize_session=False)
    )
    await trust.unrecord_valid(session, host_id, runtime)


async def invalidate(
    session: AsyncSession,
    result_id: int,
    *,
    reason: str,
    detail: str,
    from_states: Collection[ValidateState] = SUCCESS_STATES,
) -> bool:
    """A success whose ``validate_state`` is in ``from_states`` -> ``outcome =
    validate_error``, ``validate_state = invalid`` with ``reason``/``detail``; its host is
    counted invalid, and when it had been valid its valid count and credit are taken back
    first. False (nothing changed) when the result is no such success any more."""
    row = (
        await session.exec(
            select(Result, WorkUnit)
            .join(WorkUnit, col(WorkUnit.id) == col(Result.workunit_id))
            .where(col(Result.id) == result_id, col(Result.outcome) == Outcome.success)
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    if row is None or row[0].validate_state not in from_states:
        return False
    result, wu = row
    was, host_id, runtime = result.validate_state, result.host_id, result.runtime
    changed = await session.exec(
        update(Result)
        .where(
            col(Result.id) == result_id,
            col(Result.outcome) == Outcome.success,
            col(Result.validate_state) == was,  # as read: the counters below match it
        )
        .values(
            outcome=Outcome.validate_error,
            validate_state=ValidateState.invalid,
            error_reason=reason,
            error_detail=detail[:16384],
        )
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:
        return False
    if was == ValidateState.valid:
        await revoke_valid(session, host_id, runtime, result_credit(wu.num_samples, wu.task))
    await count_invalid(session, host_id, runtime)
    return True
