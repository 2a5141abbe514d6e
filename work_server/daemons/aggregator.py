"""Aggregator: starts jobs, closes rounds (merge + evaluate), finishes jobs; the
federated-learning part of the scheduler. BOINC's closest relative is the assimilator.

One run, in this order, each item in its own transaction:

1. **cancelled jobs** (the API only sets ``Job.state``): running rounds -> ``cancelled``,
   active work units -> ``cancelled``, unsent/in-progress results -> ``over/didnt_need``.
2. **pending jobs**: ``work_server.rounds.start_job`` (shards, initial weights, round 1).
   A permanent problem (dataset missing, bad split) marks the job ``failed`` with the reason.
3. **running rounds** of running jobs close when every work unit is final (``done``/``failed``)
   with at least one ``done``, or when ``now >= round.deadline`` and the fraction of ``done``
   work units is at least ``round_min_fraction``. Closing: active work units -> ``cancelled``
   and their unsent/in-progress results -> ``over/didnt_need``; the canonical results are
   merged with the job's merge policy (``num_samples`` from the work unit) and evaluated on
   the test split; the round gets its metrics and result counts (``results_success``,
   ``results_error`` = client + validate errors, ``results_no_reply``); then the next round is
   created from the new weights or the job completes (``model_sha256`` = final weights, also
   recorded as blob kind ``model``). A round whose work units all failed fails the job.
   The report (``runs_dir/<job id>/report.json`` + plots) is rewritten after every round.
   With ``merge.screen_norm_ratio`` set, the canonical results are screened first
   (``work_server.merge.screening``): rejected ones are left out of the merge and become
   ``outcome=validate_error, validate_state=invalid, error_reason='screened'`` with the reason
   in ``error_detail``; their hosts get ``results_invalid + 1`` and ``consecutive_valid = 0``.

Merging and evaluating run in a worker thread; the database is written only afterwards.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.blobs import BlobStore
from work_server.daemons import TRANSIENT_ERRORS, record_run, release_connection
from work_server.daemons.job_report import write_job_report
from work_server.db.models import (
    Host,
    Job,
    JobState,
    Outcome,
    Result,
    Round,
    RoundState,
    ServerState,
    ValidateState,
    WorkUnit,
    WorkUnitState,
)
from work_server.job_spec import JobSpec
from work_server.merge import Update, get_policy, screen_updates
from work_server.ml.evaluate import Evaluation, evaluate
from work_server.ml.shards import decode_shard, decode_weights, encode_weights
from work_server.ml.updates import Weights, decode_result
from work_server.rounds import (
    INFO_CONFUSION,
    INFO_NUM_CLASSES,
    INFO_TEST_SHA256,
    JobNotPending,
    create_round,
    ensure_blob_row,
    start_job,
)
from work_server.services import trust
from yadml_common.wire import UpdateEncoding

NAME = "aggregator"
log = logging.getLogger(__name__)

_ERROR_OUTCOMES = (Outcome.client_error, Outcome.validate_error)


@dataclass(frozen=True)
class _Merged:
    weights: bytes
    evaluation: Evaluation
    screened: list[tuple[int, str]]  # (result id, reason) of results left out by screening


async def run_once(
    session: AsyncSession,
    now: float,
    *,
    blobs: BlobStore,
    runs_dir: Path,
    data_dir: Path | None = None,
    fashion_dir: Path | None = None,
) -> int:
    """One aggregator pass (see module docstring). Returns jobs started + rounds closed +
    cancelled jobs cleaned up."""
    problems: list[str] = []
    handled = await _retire_cancelled(session, now)
    handled += await _start_pending(
        session, now, blobs=blobs, data_dir=data_dir, fashion_dir=fashion_dir
    )
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
        job_id = await _maybe_close_round(session, round_id, now, blobs=blobs)
        if job_id is not None:
            handled += 1
            problem = await write_job_report(session, job_id, now, runs_dir=runs_dir)
            if problem:
                problems.append(problem)
    await _complete_finished_jobs(session, now, runs_dir=runs_dir)  # part of closing a round
    await record_run(session, NAME, now, error="; ".join(problems) or None)
    return handled


# ----------------------------------------------------------------------------- cancelled


async def _retire_cancelled(session: AsyncSession, now: float) -> int:
    job_ids = (
        await session.exec(
            select(Round.job_id)
            .join(Job, col(Job.id) == col(Round.job_id))
            .where(col(Job.state) == JobState.cancelled, col(Round.state) == RoundState.running)
            .distinct()
        )
    ).all()
    for job_id in job_ids:
        await retire_job_work(session, job_id, now, RoundState.cancelled)
        await session.exec(
            update(Job)
            .where(col(Job.id) == job_id, col(Job.finished_at).is_(None))
            .values(finished_at=now)
            .execution_options(synchronize_session=False)
        )
        await session.commit()
        log.info("job %s cancelled: its work retired", job_id)
    return len(job_ids)


async def retire_job_work(
    session: AsyncSession, job_id: int, now: float, round_state: RoundState
) -> None:
    """Running rounds of a job -> ``round_state``; active work units -> cancelled; their
    unsent/in-progress results (and a cancelled job's others) -> over/didnt_need. No commit."""
    await session.exec(
        update(Round)
        .where(col(Round.job_id) == job_id, col(Round.state) == RoundState.running)
        .values(state=round_state, closed_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.exec(
        update(WorkUnit)
        .where(col(WorkUnit.job_id) == job_id, col(WorkUnit.state) == WorkUnitState.active)
        .values(state=WorkUnitState.cancelled, need_validate=False, transition_time=now)
        .execution_options(synchronize_session=False)
    )
    await session.exec(
        update(Result)
        .where(
            col(Result.workunit_id).in_(select(WorkUnit.id).where(col(WorkUnit.job_id) == job_id)),
            col(Result.server_state).in_([ServerState.unsent, ServerState.in_progress]),
        )
        .values(server_state=ServerState.over, outcome=Outcome.didnt_need)
        .execution_options(synchronize_session=False)
    )


# ----------------------------------------------------------------------------- pending


async def _start_pending(
    session: AsyncSession,
    now: float,
    *,
    blobs: BlobStore,
    data_dir: Path | None,
    fashion_dir: Path | None,
) -> int:
    job_ids = (
        await session.exec(
            select(Job.id).where(col(Job.state) == JobState.pending).order_by(col(Job.id))
        )
    ).all()
    started = 0
    for job_id in job_ids:
        if job_id is None:
            continue
        job = await session.get(Job, job_id, populate_existing=True)
        if job is None or job.state != JobState.pending:
            continue
        try:
            await start_job(
                session, job, now, blobs=blobs, data_dir=data_dir, fashion_dir=fashion_dir
            )
            await session.commit()
        except TRANSIENT_ERRORS:
            await session.rollback()
            raise
        except JobNotPending:
            await session.rollback()  # cancelled while its data was being prepared
            continue
        except Exception as exc:  # a permanent problem with this job's data or spec
            await session.rollback()
            log.warning("job %s failed to start: %s", job_id, exc)
            await _fail_job(session, job_id, now, f"start failed: {exc}")
            await session.commit()
        else:
            log.info("job %s started", job_id)
        started += 1
    return started


async def _fail_job(session: AsyncSession, job_id: int, now: float, error: str) -> None:
    await retire_job_work(session, job_id, now, RoundState.failed)
    await session.exec(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.state).in_([JobState.pending, JobState.running]))
        .values(state=JobState.failed, error=error[:2000], finished_at=now)
        .execution_options(synchronize_session=False)
    )


# ----------------------------------------------------------------------------- rounds


class BlobUpdates(Sequence[Update]):
    """The round's updates, each decoded from its blob only when accessed: a streaming merge
    (FedAvg) holds one update at a time instead of all K."""

    def __init__(
        self,
        blobs: BlobStore,
        items: list[tuple[str, int]],
        *,
        base: Weights,
        encoding: UpdateEncoding = "fp32",
    ) -> None:
        self._blobs = blobs
        self._items = items
        self._base = base  # the round's input weights: what encoded deltas apply to
        self._encoding = encoding

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, i: int) -> Update: ...
    @overload
    def __getitem__(self, i: slice) -> list[Update]: ...
    def __getitem__(self, i: int | slice) -> Update | list[Update]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        sha, n = self._items[i]
        weights = decode_result(self._blobs.get(sha), self._base, self._encoding)
        return Update(weights=weights, num_samples=n)


def _merge_and_evaluate(
    spec: JobSpec,
    info: dict[str, Any],
    previous_sha: str,
    canonical: list[tuple[int, str, int]],
    blobs: BlobStore,
) -> _Merged:
    """Blocking: screen (if enabled) and merge the canonical results ``(result id, sha,
    num_samples)``, evaluate the merged weights on the test set."""
    previous = decode_weights(blobs.get(previous_sha))
    updates: Sequence[Update] = BlobUpdates(
        blobs,
        [(sha, n) for _, sha, n in canonical],
        base=previous,
        encoding=spec.update_encoding,
    )
    screened: list[tuple[int, str]] = []
    ratio = spec.merge.screen_norm_ratio
    if ratio is not None:
        kept, rejected = screen_updates(updates, previous, max_ratio=ratio)
        if not kept:
            raise ValueError("screening rejected every update")
        screened = [(canonical[i][0], reason) for i, reason in rejected]
        updates = [updates[i] for i in kept]
    merged = get_policy(spec.merge).merge(updates, previous)
    images, labels = decode_shard(blobs.get(info[INFO_TEST_SHA256]))
    evaluation = evaluate(
        spec.model, merged, images, labels, num_classes=int(info.get(INFO_NUM_CLASSES, 10))
    )
    return _Merged(weights=encode_weights(merged), evaluation=evaluation, screened=screened)


async def _maybe_close_round(
    session: AsyncSession, round_id: int, now: float, *, blobs: BlobStore
) -> int | None:
    """Close the round if it is due. Returns the job id when the round was closed (or the job
    failed), else None. Commits."""
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
        await _fail_job(session, job_id, now, reason)
        await session.commit()
        return job_id
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
        (rid, sha, n) for rid, sha, n in canonical_rows if rid is not None and sha is not None
    ]
    await release_connection(session)
    try:
        merged = await asyncio.to_thread(
            _merge_and_evaluate, spec, dict(job.info), rnd.weights_sha256, canonical, blobs
        )
        new_sha = await asyncio.to_thread(blobs.put, merged.weights)
    except Exception as exc:  # missing/corrupt blob, inconsistent updates: permanent
        reason = f"round {rnd.number}: merge/evaluate failed: {exc}"
        log.exception("job %s failed: %s", job_id, reason)
        await _fail_job(session, job_id, now, reason)
        await session.commit()
        return job_id

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
    await session.exec(
        update(WorkUnit)
        .where(col(WorkUnit.round_id) == round_id, col(WorkUnit.state) == WorkUnitState.active)
        .values(state=WorkUnitState.cancelled, need_validate=False, transition_time=now)
        .execution_options(synchronize_session=False)
    )
    await session.exec(
        update(Result)
        .where(
            col(Result.workunit_id).in_(
                select(WorkUnit.id).where(
                    col(WorkUnit.round_id) == round_id,
                    col(WorkUnit.state) == WorkUnitState.cancelled,
                )
            ),
            col(Result.server_state).in_([ServerState.unsent, ServerState.in_progress]),
        )
        .values(server_state=ServerState.over, outcome=Outcome.didnt_need)
        .execution_options(synchronize_session=False)
    )
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
    job.info = {**job.info, INFO_CONFUSION: evaluation.confusion_matrix}
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
    if not final:
        await create_round(session, job, rnd.number + 1, new_sha, now)
    # after the last round the job stays "running" until its final report is on disk
    # (_complete_finished_jobs), so whoever sees "completed" also sees the whole report
    await session.commit()
    return job_id


async def _complete_finished_jobs(session: AsyncSession, now: float, *, runs_dir: Path) -> int:
    """Running jobs whose last round is done and that have no running round: write the final
    report, then mark them completed. Also picks up a job left so by a crash in between."""
    jobs = (await session.exec(select(Job).where(col(Job.state) == JobState.running))).all()
    completed = 0
    for job in jobs:
        spec = JobSpec.model_validate(job.spec)
        running = (
            await session.exec(
                select(func.count())
                .select_from(Round)
                .where(col(Round.job_id) == job.id, col(Round.state) == RoundState.running)
            )
        ).one()
        last_done = (
            await session.exec(
                select(func.max(Round.number)).where(
                    col(Round.job_id) == job.id, col(Round.state) == RoundState.done
                )
            )
        ).one()
        if running or last_done is None or last_done < spec.rounds or job.id is None:
            continue
        await write_job_report(
            session,
            job.id,
            now,
            runs_dir=runs_dir,
            override={"state": JobState.completed, "finished_at": now},
        )
        await session.exec(
            update(Job)
            .where(col(Job.id) == job.id, col(Job.state) == JobState.running)
            .values(state=JobState.completed, finished_at=now)
            .execution_options(synchronize_session=False)
        )
        await session.commit()
        log.info("job %s completed", job.id)
        completed += 1
    return completed


async def _mark_screened(session: AsyncSession, screened: list[tuple[int, str]]) -> None:
    """Screened-out canonical results -> invalid, their hosts' counters as the validator's
    for an invalid result. No commit."""
    for result_id, reason in screened:
        log.info("result %s screened out of the merge: %s", result_id, reason)
        was_valid = (
            await session.exec(select(Result.validate_state).where(col(Result.id) == result_id))
        ).one_or_none() == ValidateState.valid
        changed = await session.exec(
            update(Result)
            .where(col(Result.id) == result_id, col(Result.outcome) == Outcome.success)
            .values(
                outcome=Outcome.validate_error,
                validate_state=ValidateState.invalid,
                error_reason="screened",
                error_detail=reason,
            )
            .execution_options(synchronize_session=False)
        )
        owner = (
            await session.exec(
                select(Result.host_id, Result.runtime).where(col(Result.id) == result_id)
            )
        ).one_or_none()
        host_id, runtime = owner if owner is not None else (None, None)
        if changed.rowcount == 1 and host_id is not None:
            await session.exec(
                update(Host)
                .where(col(Host.id) == host_id)
                .values(
                    results_invalid=col(Host.results_invalid) + 1,
                    consecutive_valid=0,
                    # the validator had counted it valid: it is counted once, as invalid
                    results_valid=col(Host.results_valid) - (1 if was_valid else 0),
                )
                .execution_options(synchronize_session=False)
            )
            if was_valid:
                await trust.unrecord_valid(session, host_id, runtime)
            await trust.record_invalid(session, host_id, runtime)
