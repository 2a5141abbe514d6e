"""File deleter: removes blobs nothing needs any more (BOINC ``sched/file_deleter.cpp``).

Referenced (kept) blobs:

* every job's ``model_sha256`` (a finished job's final model, a running job's current weights);
* every uploaded dataset (``UploadedDataset``; kept until an operator removes it);
* for jobs not finished (``pending``/``running``): their rounds' weights, their work units'
  shard and weights inputs, their results' outputs, and the shard/test/initial-weights blobs
  listed in ``Job.info`` (``JobInfo.blob_hashes``).

Everything else (a finished job's shards, intermediate weights and uploads; blobs no row
mentions at all) is garbage once its ``Blob.created_at`` is older than ``grace_s``, which
protects blobs written just before the row that will reference them. The file is deleted
first, then the row. Files on disk without any ``Blob`` row (a crash between writing the file
and committing the row) are deleted once their modification time is older than ``grace_s``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from sqlalchemy import delete
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server import job_info
from work_server.blobs import BlobStore
from work_server.daemons import record_run
from work_server.db.models import (
    Blob,
    Job,
    JobState,
    Result,
    Round,
    UploadedDataset,
    WorkUnit,
)

NAME = "file_deleter"
log = logging.getLogger(__name__)

UNFINISHED_JOB_STATES = (JobState.pending, JobState.running)


async def referenced_blobs(session: AsyncSession) -> set[str]:
    """Every sha256 a row still needs (see module docstring)."""
    refs: set[str] = set()

    def add(values: Iterable[str | None]) -> None:
        refs.update(v for v in values if v)

    add((await session.exec(select(Job.model_sha256))).all())
    add((await session.exec(select(UploadedDataset.sha256))).all())
    live = select(Job.id).where(col(Job.state).in_(UNFINISHED_JOB_STATES))
    add((await session.exec(select(Round.weights_sha256).where(col(Round.job_id).in_(live)))).all())
    for shard, weights in (
        await session.exec(
            select(WorkUnit.shard_sha256, WorkUnit.weights_sha256).where(
                col(WorkUnit.job_id).in_(live)
            )
        )
    ).all():
        add((shard, weights))
    add(
        (
            await session.exec(
                select(Result.output_sha256)
                .join(WorkUnit, col(WorkUnit.id) == col(Result.workunit_id))
                .where(col(WorkUnit.job_id).in_(live), col(Result.output_sha256).is_not(None))
            )
        ).all()
    )
    for raw in (
        await session.exec(select(Job.info).where(col(Job.state).in_(UNFINISHED_JOB_STATES)))
    ).all():
        info = job_info.from_json(raw)
        if info is not None:  # a pending job has no blobs yet
            add(info.blob_hashes())
    return refs


def _orphan_files(blobs: BlobStore, known: set[str], cutoff: float) -> list[str]:
    out = []
    for sha in blobs.list():
        if sha in known:
            continue
        try:
            if blobs.path(sha).stat().st_mtime <= cutoff:
                out.append(sha)
        except FileNotFoundError:
            continue
    return out


async def run_once(
    session: AsyncSession, now: float, *, blobs: BlobStore, grace_s: float, batch_size: int = 500
) -> int:
    """Delete unreferenced blobs older than ``grace_s``; returns how many were deleted."""
    cutoff = now - grace_s
    refs = await referenced_blobs(session)
    old = (await session.exec(select(Blob.sha256).where(col(Blob.created_at) <= cutoff))).all()
    garbage = [sha for sha in old if sha not in refs]
    deleted = 0
    for start in range(0, len(garbage), batch_size):
        batch = garbage[start : start + batch_size]
        for sha in batch:
            await asyncio.to_thread(blobs.delete, sha)
        await session.exec(
            delete(Blob)
            .where(col(Blob.sha256).in_(batch), col(Blob.created_at) <= cutoff)
            .execution_options(synchronize_session=False)
        )
        await session.commit()
        deleted += len(batch)

    # files that never got a row
    known = set((await session.exec(select(Blob.sha256))).all()) | refs
    orphans = await asyncio.to_thread(_orphan_files, blobs, known, cutoff)
    for sha in orphans:
        if await asyncio.to_thread(blobs.delete, sha):
            deleted += 1
    if deleted:
        log.info("deleted %d blobs", deleted)
    await record_run(session, NAME, now)
    return deleted
