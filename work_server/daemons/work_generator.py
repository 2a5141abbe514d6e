"""Work generator: turns jobs into work units (BOINC's work generator).

One run, each item in its own transaction:

1. **pending jobs**: ``start_job`` builds the job's data (``job_data.prepare_job_data``, in a
   thread), records its blobs, marks the job ``running`` with its ``Job.info``,
   ``current_round = 1`` and the initial weights as ``model_sha256``, and creates round 1.
   The update is conditional on ``pending``: a job cancelled meanwhile is left alone. A
   permanent problem (dataset missing, bad split) marks the job ``failed`` with the reason.
2. **the next round** of every running job whose current round the round closer has closed
   as ``done`` and that wants more rounds (``current_round < JobSpec.rounds``): round
   ``current_round + 1`` trains from the job's current weights (``model_sha256``, the merged
   ones). Claimed by a conditional update of ``current_round``, so two processes (around a
   change of daemon leader) never create the same round twice.

A round is one work unit per shard, each due for the transitioner at once
(``transition_time = now``), which creates its results.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

from sqlalchemy import and_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server import job_info
from work_server.blobs import BlobStore
from work_server.daemons import TRANSIENT_ERRORS, record_run
from work_server.daemons.job_data import prepare_job_data
from work_server.db.models import Job, JobState, Round, RoundState, WorkUnit
from work_server.db.upsert import ensure_blob_row
from work_server.job_info import JobInfo
from work_server.job_spec import JobSpec
from work_server.services import trust
from yadml_common.wire import TaskConfig

NAME = "work_generator"
log = logging.getLogger(__name__)

#: ``max_output_bytes`` of a work unit = this many times the weights blob, plus slack for the
#: safetensors header and the JSON report.
OUTPUT_SIZE_FACTOR = 2
OUTPUT_SIZE_SLACK = 64 * 1024


class JobNotPending(Exception):
    """The job left ``pending`` (was cancelled) while its data was being prepared."""


async def run_once(
    session: AsyncSession,
    now: float,
    *,
    blobs: BlobStore,
    data_dir: Path | None = None,
    fashion_dir: Path | None = None,
) -> int:
    """One pass (see module docstring). Returns jobs started (or failed to) + rounds made."""
    handled = await _start_pending(
        session, now, blobs=blobs, data_dir=data_dir, fashion_dir=fashion_dir
    )
    handled += await _next_rounds(session, now)
    await record_run(session, NAME, now)
    return handled


def task_seed(job_seed: int, round_number: int, shard_index: int) -> int:
    """The trainer seed of one work unit: a hash of (job seed, round, shard), in [0, 2**31)."""
    digest = hashlib.sha256(f"yadml:{job_seed}:{round_number}:{shard_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31)


def round_deadline(spec: JobSpec, now: float) -> float:
    timeout = spec.round_timeout_s or 2.0 * spec.replication.delay_bound_s
    return now + timeout


# ----------------------------------------------------------------------------- pending jobs


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
            await session.exec(
                update(Job)
                .where(col(Job.id) == job_id, col(Job.state) == JobState.pending)
                .values(state=JobState.failed, error=f"start failed: {exc}"[:2000], finished_at=now)
                .execution_options(synchronize_session=False)
            )
            await session.commit()
        else:
            log.info("job %s started", job_id)
        started += 1
    return started


async def start_job(
    session: AsyncSession,
    job: Job,
    now: float,
    *,
    blobs: BlobStore,
    data_dir: Path | None,
    fashion_dir: Path | None,
) -> None:
    """Build a pending job's shards and initial weights, mark it running, create round 1.

    Raises ``JobStartError``/``ValueError``/``OSError`` for permanent problems with the job's
    data (the caller marks the job failed) and ``JobNotPending`` when the job was cancelled
    meanwhile (the caller rolls back). Does not commit.
    """
    if job.id is None:
        raise ValueError("job has no id (not flushed)")
    spec = JobSpec.model_validate(job.spec)
    await session.commit()  # nothing written yet: free the connection while preparing data
    data = await asyncio.to_thread(
        prepare_job_data, spec, blobs, data_dir=data_dir, fashion_dir=fashion_dir
    )
    info = data.info
    for sha, size in zip(info.shard_sha256, info.shard_bytes, strict=True):
        await ensure_blob_row(session, sha, size, "shard", now)
    await ensure_blob_row(session, info.test_sha256, data.test_bytes, "shard", now)
    await ensure_blob_row(session, info.initial_weights_sha256, info.weights_bytes, "weights", now)
    # conditional: the API may have cancelled the job while its data was being prepared
    changed = await session.exec(
        update(Job)
        .where(col(Job.id) == job.id, col(Job.state) == JobState.pending)
        .values(
            state=JobState.running,
            started_at=now,
            error=None,
            info=info.to_json(),
            model_sha256=info.initial_weights_sha256,
            current_round=1,
        )
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:
        raise JobNotPending(f"job {job.id} is no longer pending")
    await create_round(session, job.id, spec, info, 1, info.initial_weights_sha256, now)
    await session.refresh(job)


# ----------------------------------------------------------------------------- next rounds


async def _next_rounds(session: AsyncSession, now: float) -> int:
    jobs = (
        await session.exec(
            select(Job)
            .join(
                Round,
                and_(
                    col(Round.job_id) == col(Job.id),
                    col(Round.number) == col(Job.current_round),
                ),
            )
            .where(col(Job.state) == JobState.running, col(Round.state) == RoundState.done)
            .order_by(col(Job.id))
            .execution_options(populate_existing=True)
        )
    ).all()
    created = 0
    for job in jobs:
        job_id, current, weights_sha = job.id, job.current_round, job.model_sha256
        spec = JobSpec.model_validate(job.spec)
        if job_id is None or current >= spec.rounds or weights_sha is None:
            continue  # after the last round: the job finisher's
        info = job_info.load(job)
        claim = await session.exec(
            update(Job)
            .where(
                col(Job.id) == job_id,
                col(Job.state) == JobState.running,
                col(Job.current_round) == current,
            )
            .values(current_round=current + 1)
            .execution_options(synchronize_session=False)
        )
        if claim.rowcount != 1:
            await session.rollback()  # another process made it, or the job ended meanwhile
            continue
        await create_round(session, job_id, spec, info, current + 1, weights_sha, now)
        await session.commit()
        log.debug("job %s round %s created", job_id, current + 1)
        created += 1
    return created


async def create_round(
    session: AsyncSession,
    job_id: int,
    spec: JobSpec,
    info: JobInfo,
    number: int,
    weights_sha256: str,
    now: float,
) -> Round:
    """Create round ``number`` of the job training from ``weights_sha256``: one work unit per
    shard, each due for the transitioner now. The caller sets ``Job.current_round`` (in the
    same transaction). Does not commit."""
    max_output = OUTPUT_SIZE_FACTOR * info.weights_bytes + OUTPUT_SIZE_SLACK
    rep = spec.replication
    min_quorum = rep.min_quorum
    target = max(rep.target_nresults, min_quorum)
    max_total = max(rep.max_total_results, target)
    quorum_if_replicated = trust.adaptive_quorum(rep.min_quorum)
    if rep.adaptive:  # unreplicated until dispatch decides otherwise (services/trust.py)
        min_quorum, target = 1, 1
        max_total = max(rep.max_total_results, quorum_if_replicated + 1)

    rnd = Round(
        job_id=job_id,
        number=number,
        weights_sha256=weights_sha256,
        started_at=now,
        deadline=round_deadline(spec, now),
    )
    session.add(rnd)
    await session.flush()
    assert rnd.id is not None
    for index, (sha, n) in enumerate(zip(info.shard_sha256, info.shard_sizes, strict=True)):
        task = TaskConfig(
            model=spec.model,
            dataset=spec.dataset,
            local_epochs=spec.local_epochs,
            batch_size=spec.batch_size,
            lr=spec.lr,
            optimizer=spec.optimizer,
            seed=task_seed(spec.seed, number, index),
            update_encoding=spec.update_encoding,
        )
        session.add(
            WorkUnit(
                job_id=job_id,
                round_id=rnd.id,
                shard_index=index,
                shard_sha256=sha,
                weights_sha256=weights_sha256,
                num_samples=n,
                task=task.model_dump(mode="json"),
                runtimes=list(spec.runtimes),
                min_quorum=min_quorum,
                target_nresults=target,
                max_error_results=rep.max_error_results,
                max_total_results=max_total,
                delay_bound_s=rep.delay_bound_s,
                tolerance=rep.tolerance,
                max_output_bytes=max_output,
                transition_time=now,
                created_at=now,
                adaptive=rep.adaptive,
                adaptive_quorum=quorum_if_replicated,
                trust_threshold=rep.trust_threshold,
                spot_check_rate=rep.spot_check_rate,
            )
        )
    await session.flush()
    return rnd
