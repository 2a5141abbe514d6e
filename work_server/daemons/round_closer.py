"""Round closer: ends rounds; the federated-learning step of the scheduler (merge, screen,
evaluate). BOINC's closest relative is the assimilator.

One run, each round in its own transaction:

1. running rounds of **cancelled** jobs (the API only sets ``Job.state``) close as
   ``cancelled``.
2. running rounds of running jobs close when every work unit is final (``done``/``failed``)
   with at least one ``done``, or when ``now >= round.deadline`` and the fraction of ``done``
   work units is at least ``round_min_fraction``. Closing: the canonical results are merged
   with the job's merge policy (``num_samples`` from the work unit) and evaluated on the test
   split, in a worker thread; then the round becomes ``done`` with its metrics and result
   counts (``results_success``, ``results_error`` = client + validate errors,
   ``results_no_reply``), the job gets the merged weights (``model_sha256``, a blob of kind
   ``model`` after the last round) and the confusion matrix (``Job.info``). The work
   generator then creates the next round, or the job finisher completes the job.
   With ``merge.screen_norm_ratio`` set, the canonical results are screened first
   (``work_server.merge.screening``): rejected ones are left out of the merge and become
   ``outcome=validate_error, validate_state=invalid, error_reason='screened'`` with the reason
   in ``error_detail``; their hosts get ``results_invalid + 1`` and ``consecutive_valid = 0``,
   and the valid count and credit the validator granted are taken back, once
   (``work_server.services.credit.invalidate``).
3. a round with no ``done`` work unit and none active (or no work unit at all), or whose
   merge fails, closes as ``failed`` with the reason in ``Job.error``; the job finisher then
   fails the job.

Ending a round (``cancel_round_work``) marks its active work units ``cancelled`` and hands
them to the transitioner (``transition_time = now``), which retires their results; a failed
or cancelled round ends the job's work, so every work unit of the job with results still out
is handed over too. The report (``runs_dir/<job id>/report.json`` + plots) is rewritten after
every round closed as ``done`` but the last, whose report the job finisher writes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server import job_info
from work_server.blobs import BlobStore
from work_server.daemons import record_run, release_connection
from work_server.daemons.job_report import write_job_report
from work_server.daemons.round_merge import Canonical, merge_and_evaluate
from work_server.db.models import (
    Job,
    JobState,
    Outcome,
    Result,
    Round,
    RoundState,
    ServerState,
    WorkUnit,
    WorkUnitState,
)
from work_server.db.upsert import ensure_blob_row
from work_server.job_spec import JobSpec
from work_server.services import credit

NAME = "round_closer"
log = logging.getLogger(__name__)

_ERROR_OUTCOMES = (Outcome.client_error, Outcome.validate_error)


@dataclass(frozen=True)
class _Closed:
    job_id: int
    report: bool  # a round closed as done that is not the job's last: rewrite the report


async def run_once(session: AsyncSession, now: float, *, blobs: BlobStore, runs_dir: Path) -> int:
    """One pass (see module docstring). Returns the rounds closed (done, failed or
    cancelled)."""
    problems: list[str] = []
    handled = await _close_cancelled(session, now)
    round_ids = (
        await session.exec(
            select(Round.id)
            .join(Job, col(Job.id) == col(Round.job_id))
            .where(col(Round.state) == RoundState.running, col(Job.state) == JobState.running)
            .order_by(col(Round.id))
        )
    ).all()
    for round_id in round_ids:
        if round_id is None:
            continue
        closed = await _maybe_close(session, round_id, now, blobs=blobs)
        if closed is None:
            continue
        handled += 1
        if closed.report:
            problem = await write_job_report(session, closed.job_id, now, runs_dir=runs_dir)
            if problem:
                problems.append(problem)
    await record_run(session, NAME, now, error="; ".join(problems) or None)
    return handled


async def cancel_round_work(
    session: AsyncSession, now: float, *, round_id: int, job_over: int | None = None
) -> None:
    """The round's active work units -> ``cancelled`` (nothing left to validate), handed to
    the transitioner (``transition_time = now``), which retires their results. With
    ``job_over`` (a job id: its round failed or was cancelled) every work unit of that job
    with results still out is handed over too. No commit."""
    await session.exec(
        update(WorkUnit)
        .where(col(WorkUnit.round_id) == round_id, col(WorkUnit.state) == WorkUnitState.active)
        .values(state=WorkUnitState.cancelled, need_validate=False, transition_time=now)
        .execution_options(synchronize_session=False)
    )
    if job_over is None:
        return
    out = select(Result.workunit_id).where(
        col(Result.server_state).in_([ServerState.unsent, ServerState.in_progress])
    )
    await session.exec(
        update(WorkUnit)
        .where(col(WorkUnit.job_id) == job_over, col(WorkUnit.id).in_(out))
        .values(transition_time=now)
        .execution_options(synchronize_session=False)
    )


async def _end_round(
    session: AsyncSession, round_id: int, job_id: int, state: RoundState, now: float
) -> bool:
    """Claim a running round as ``failed``/``cancelled`` and end the job's work; False when
    it was closed meanwhile (by another process). No commit."""
    claim = await session.exec(
        update(Round)
        .where(col(Round.id) == round_id, col(Round.state) == RoundState.running)
        .values(state=state, closed_at=now)
        .execution_options(synchronize_session=False)
    )
    if claim.rowcount != 1:
        return False
    await cancel_round_work(session, now, round_id=round_id, job_over=job_id)
    return True


async def _close_cancelled(session: AsyncSession, now: float) -> int:
    rows = (
        await session.exec(
            select(Round.id, Round.job_id)
            .join(Job, col(Job.id) == col(Round.job_id))
            .where(col(Job.state) == JobState.cancelled, col(Round.state) == RoundState.running)
            .order_by(col(Round.id))
        )
    ).all()
    closed = 0
    for round_id, job_id in rows:
        if round_id is None:
            continue
        if await _end_round(session, round_id, job_id, RoundState.cancelled, now):
            await session.commit()
            log.info("job %s cancelled: its work retired", job_id)
            closed += 1
        else:
            await session.rollback()
    return closed


async def _fail_round(
    session: AsyncSession, round_id: int, job_id: int, now: float, reason: str
) -> _Closed | None:
    """Close the round as ``failed`` with the reason in ``Job.error`` (the job finisher fails
    the job). Commits."""
    if not await _end_round(session, round_id, job_id, RoundState.failed, now):
        await session.rollback()
        return None
    await session.exec(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.state) == JobState.running)
        .values(error=reason[:2000])
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return _Closed(job_id=job_id, report=False)


async def _maybe_close(
    session: AsyncSession, round_id: int, now: float, *, blobs: BlobStore
) -> _Closed | None:
    """Close the round if it is due (as done, or failed). Commits."""
    rnd = await session.get(Round, round_id, populate_existing=True)
    if rnd is None or rnd.state != RoundState.running:
        return None
    job = await session.get(Job, rnd.job_id, populate_existing=True)
    if job is None or job.state != JobState.running or job.id is None:
        return None
    job_id = job.id
    spec = JobSpec.model_validate(job.spec)
    counts: dict[str, int] = {
        state: n
        for state, n in (
            await session.exec(
                select(WorkUnit.state, func.count())
                .where(col(WorkUnit.round_id) == round_id)
                .group_by(col(WorkUnit.state))
            )
        ).all()
    }
    total = sum(counts.values())
    done = counts.get(WorkUnitState.done, 0)
    active = counts.get(WorkUnitState.active, 0)

    if total == 0 or (active == 0 and done == 0):
        failed = counts.get(WorkUnitState.failed, 0)
        reason = f"round {rnd.number}: no work unit completed ({failed} of {total} failed)"
        log.warning("job %s failed: %s", job_id, reason)
        return await _fail_round(session, round_id, job_id, now, reason)
    due = active == 0 or (now >= rnd.deadline and done / total >= spec.round_min_fraction)
    if not due or done == 0:
        return None

    canonical_rows = (
        await session.exec(
            select(Result.id, Result.output_sha256, WorkUnit.num_samples)
            .join(Result, col(Result.id) == col(WorkUnit.canonical_result_id))
            .where(col(WorkUnit.round_id) == round_id, col(WorkUnit.state) == WorkUnitState.done)
            .order_by(col(WorkUnit.shard_index))
        )
    ).all()
    canonical = [
        Canonical(result_id=rid, sha256=sha, num_samples=n)
        for rid, sha, n in canonical_rows
        if rid is not None and sha is not None
    ]
    info = job_info.load(job)
    await release_connection(session)
    try:
        merged = await asyncio.to_thread(
            merge_and_evaluate, spec, info, rnd.weights_sha256, canonical, blobs
        )
        new_sha = await asyncio.to_thread(blobs.put, merged.weights)
    except Exception as exc:  # missing/corrupt blob, inconsistent updates: permanent
        reason = f"round {rnd.number}: merge/evaluate failed: {exc}"
        log.exception("job %s failed: %s", job_id, reason)
        return await _fail_round(session, round_id, job_id, now, reason)

    # everything below is one transaction, which starts by claiming the round: should two
    # processes ever close it at once (around a change of daemon leader), one wins
    claim = await session.exec(
        update(Round)
        .where(col(Round.id) == round_id, col(Round.state) == RoundState.running)
        .values(state=RoundState.done, closed_at=now)
        .execution_options(synchronize_session=False)
    )
    if claim.rowcount != 1:
        await session.rollback()
        return None
    await cancel_round_work(session, now, round_id=round_id)
    await _mark_screened(session, merged.screened)
    outcomes: dict[str, int] = {
        outcome: n
        for outcome, n in (
            await session.exec(
                select(Result.outcome, func.count())
                .join(WorkUnit, col(WorkUnit.id) == col(Result.workunit_id))
                .where(col(WorkUnit.round_id) == round_id)
                .group_by(col(Result.outcome))
            )
        ).all()
    }
    evaluation = merged.evaluation
    rnd.state = RoundState.done
    rnd.closed_at = now
    rnd.results_success = outcomes.get(Outcome.success, 0)
    rnd.results_error = sum(outcomes.get(o, 0) for o in _ERROR_OUTCOMES)
    rnd.results_no_reply = outcomes.get(Outcome.no_reply, 0)
    rnd.metrics = {
        **evaluation.metrics(),
        "results_success": rnd.results_success,
        "results_error": rnd.results_error,
        "results_no_reply": rnd.results_no_reply,
    }
    session.add(rnd)
    final = rnd.number >= spec.rounds
    await ensure_blob_row(
        session, new_sha, len(merged.weights), "model" if final else "weights", now
    )
    job_info.store(job, info.model_copy(update={"confusion_matrix": evaluation.confusion_matrix}))
    job.model_sha256 = new_sha
    session.add(job)
    log.info(
        "job %s round %s closed: %d/%d work units done, accuracy %.4f",
        job_id,
        rnd.number,
        done,
        total,
        evaluation.accuracy,
    )
    # the job stays "running" after its last round until the job finisher has written the
    # final report, so whoever sees "completed" also sees the whole report
    await session.commit()
    return _Closed(job_id=job_id, report=not final)


async def _mark_screened(session: AsyncSession, screened: list[tuple[int, str]]) -> None:
    """Screened-out canonical results -> invalid; their credit is taken back. No commit."""
    for result_id, reason in screened:
        log.info("result %s screened out of the merge: %s", result_id, reason)
        await credit.invalidate(session, result_id, reason=credit.SCREENED, detail=reason)
