"""Starting a job and creating its rounds: the work units every round hands out.

A job's data is fixed once, at start: the dataset is split into shards, every shard and the
test set are stored as content-addressed blobs (reused by every round, so their hashes live
in ``Job.info``), and the initial global weights come from ``yadml_trainer.models.initial_state``.
Each round then creates one work unit per shard that trains from the round's global weights.

Neither function commits: the caller (the aggregator) commits the whole step at once, so a
crash never leaves half a round behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.blobs import BlobStore
from work_server.db.models import Blob, Job, JobState, Round, WorkUnit
from work_server.job_spec import JobSpec
from work_server.ml.datasets import load_dataset
from work_server.ml.shards import encode_shard, encode_weights
from work_server.ml.split import split_indices
from work_server.ml.uploaded import decode_dataset
from work_server.services import trust
from yadml_common.wire import TaskConfig
from yadml_trainer.models import initial_state

#: ``max_output_bytes`` of a work unit = this many times the weights blob, plus slack for the
#: safetensors header and the JSON report.
OUTPUT_SIZE_FACTOR = 2
OUTPUT_SIZE_SLACK = 64 * 1024

# Keys of Job.info (written by start_job, read by create_round and the daemons).
INFO_SHARD_SHA256 = "shard_sha256"  # list[str], one per shard
INFO_SHARD_SIZES = "shard_sizes"  # list[int]: samples per shard
INFO_SHARD_BYTES = "shard_bytes"  # list[int]: blob sizes
INFO_TEST_SHA256 = "test_sha256"  # the test split, a shard-format blob
INFO_NUM_TRAIN = "num_train_samples"
INFO_NUM_TEST = "num_test_samples"
INFO_NUM_CLASSES = "num_classes"
INFO_WEIGHTS_BYTES = "weights_bytes"  # size of a weights blob of this model
INFO_INITIAL_WEIGHTS = "initial_weights_sha256"
INFO_CONFUSION = "confusion_matrix"  # latest evaluation (the aggregator keeps it up to date)


class JobStartError(Exception):
    """A permanent problem with a job's data (empty shard, unknown dataset...)."""


class JobNotPending(Exception):
    """The job left ``pending`` (was cancelled) while its data was being prepared."""


@dataclass(frozen=True)
class _Prepared:
    shard_sha256: list[str]
    shard_sizes: list[int]
    shard_bytes: list[int]
    test_sha256: str
    test_bytes: int
    num_train: int
    num_test: int
    num_classes: int
    weights_sha256: str
    weights_bytes: int


def task_seed(job_seed: int, round_number: int, shard_index: int) -> int:
    """The trainer seed of one work unit: a hash of (job seed, round, shard), in [0, 2**31)."""
    digest = hashlib.sha256(f"yadml:{job_seed}:{round_number}:{shard_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31)


def round_deadline(spec: JobSpec, now: float) -> float:
    timeout = spec.round_timeout_s or 2.0 * spec.replication.delay_bound_s
    return now + timeout


def _prepare(
    spec: JobSpec, blobs: BlobStore, data_dir: Path | None, fashion_dir: Path | None
) -> _Prepared:
    """Load, split, encode and store everything a job needs (blocking: run in a thread)."""
    if spec.dataset == "upload":
        if spec.dataset_sha256 is None or not blobs.exists(spec.dataset_sha256):
            raise JobStartError(f"uploaded dataset {spec.dataset_sha256} is not stored")
        dataset = decode_dataset(blobs.get(spec.dataset_sha256))
    else:
        dataset = load_dataset(spec.dataset, data_dir=data_dir, fashion_dir=fashion_dir)
    if spec.train_subset is not None and spec.train_subset < len(dataset.train_labels):
        # a seeded random subset, in the original order, before the split
        n = len(dataset.train_labels)
        keep = np.sort(np.random.default_rng(spec.seed).permutation(n)[: spec.train_subset])
        dataset = dataclasses.replace(
            dataset,
            train_images=dataset.train_images[keep],
            train_labels=dataset.train_labels[keep],
        )
    parts = split_indices(dataset.train_labels, spec.shards, spec.split, spec.seed)
    if len(parts) != spec.shards:
        raise JobStartError(f"split produced {len(parts)} shards, expected {spec.shards}")
    shard_sha: list[str] = []
    sizes: list[int] = []
    nbytes: list[int] = []
    for i, idx in enumerate(parts):
        if len(idx) == 0:
            raise JobStartError(
                f"shard {i} is empty (split {spec.split.method!r} of {spec.dataset} "
                f"into {spec.shards} shards)"
            )
        data = encode_shard(dataset.train_images[idx], dataset.train_labels[idx])
        shard_sha.append(blobs.put(data))
        sizes.append(len(idx))
        nbytes.append(len(data))
    test = encode_shard(dataset.test_images, dataset.test_labels)
    weights = encode_weights(initial_state(spec.model, spec.seed))
    return _Prepared(
        shard_sha256=shard_sha,
        shard_sizes=sizes,
        shard_bytes=nbytes,
        test_sha256=blobs.put(test),
        test_bytes=len(test),
        num_train=len(dataset.train_labels),
        num_test=len(dataset.test_labels),
        num_classes=dataset.num_classes,
        weights_sha256=blobs.put(weights),
        weights_bytes=len(weights),
    )


async def ensure_blob_row(
    session: AsyncSession, sha256: str, size: int, kind: str, now: float
) -> Blob:
    """Record a stored blob. An existing row is refreshed (``created_at = now``) so that the
    file deleter's grace period starts again for a blob that is being reused."""
    row = await session.get(Blob, sha256, populate_existing=True)
    if row is None:
        row = Blob(sha256=sha256, size=size, kind=kind, created_at=now)
    else:
        row.created_at = max(row.created_at, now)
        if kind == "model":
            row.kind = kind
    session.add(row)
    return row


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
    spec = JobSpec.model_validate(job.spec)
    await session.commit()  # nothing written yet: free the connection while preparing data
    prep = await asyncio.to_thread(_prepare, spec, blobs, data_dir, fashion_dir)
    for sha, size in zip(prep.shard_sha256, prep.shard_bytes, strict=True):
        await ensure_blob_row(session, sha, size, "shard", now)
    await ensure_blob_row(session, prep.test_sha256, prep.test_bytes, "shard", now)
    await ensure_blob_row(session, prep.weights_sha256, prep.weights_bytes, "weights", now)
    info: dict[str, Any] = dict(job.info or {})
    info.update(
        {
            INFO_SHARD_SHA256: prep.shard_sha256,
            INFO_SHARD_SIZES: prep.shard_sizes,
            INFO_SHARD_BYTES: prep.shard_bytes,
            INFO_TEST_SHA256: prep.test_sha256,
            INFO_NUM_TRAIN: prep.num_train,
            INFO_NUM_TEST: prep.num_test,
            INFO_NUM_CLASSES: prep.num_classes,
            INFO_WEIGHTS_BYTES: prep.weights_bytes,
            INFO_INITIAL_WEIGHTS: prep.weights_sha256,
        }
    )
    # conditional: the API may have cancelled the job while its data was being prepared
    changed = await session.exec(
        update(Job)
        .where(col(Job.id) == job.id, col(Job.state) == JobState.pending)
        .values(
            state=JobState.running,
            started_at=now,
            error=None,
            info=info,
            model_sha256=prep.weights_sha256,
        )
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:
        raise JobNotPending(f"job {job.id} is no longer pending")
    await session.refresh(job)
    await create_round(session, job, 1, prep.weights_sha256, now)


async def create_round(
    session: AsyncSession, job: Job, number: int, weights_sha256: str, now: float
) -> Round:
    """Create round ``number`` of ``job`` training from ``weights_sha256``: one work unit per
    shard, each due for the transitioner now. Sets ``job.current_round``. Does not commit."""
    if job.id is None:
        raise ValueError("job has no id (not flushed)")
    spec = JobSpec.model_validate(job.spec)
    info = job.info or {}
    shard_sha: list[str] = list(info[INFO_SHARD_SHA256])
    shard_sizes: list[int] = list(info[INFO_SHARD_SIZES])
    weights_bytes = int(info.get(INFO_WEIGHTS_BYTES) or 0)
    if not weights_bytes:
        row = await session.get(Blob, weights_sha256)
        weights_bytes = row.size if row is not None else 0
    max_output = OUTPUT_SIZE_FACTOR * weights_bytes + OUTPUT_SIZE_SLACK

    rep = spec.replication
    min_quorum = rep.min_quorum
    target = max(rep.target_nresults, min_quorum)
    max_total = max(rep.max_total_results, target)
    quorum_if_replicated = trust.adaptive_quorum(rep.min_quorum)
    if rep.adaptive:  # unreplicated until dispatch decides otherwise (services/trust.py)
        min_quorum, target = 1, 1
        max_total = max(rep.max_total_results, quorum_if_replicated + 1)

    rnd = Round(
        job_id=job.id,
        number=number,
        weights_sha256=weights_sha256,
        started_at=now,
        deadline=round_deadline(spec, now),
    )
    session.add(rnd)
    await session.flush()
    assert rnd.id is not None
    for index, (sha, n) in enumerate(zip(shard_sha, shard_sizes, strict=True)):
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
                job_id=job.id,
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
    job.current_round = number
    session.add(job)
    await session.flush()
    return rnd
