"""A job's data, built once when the work generator starts it (blocking: run in a thread).

The dataset is loaded (a named one, or an operator's upload from the blob store), optionally
cut to a seeded random subset, split into shards (``JobSpec.split``), and every shard, the
test split and the initial global weights (``yadml_trainer.models.initial_state``) are
stored as content-addressed blobs. Every round reuses them, so their hashes go into
``Job.info`` (``work_server.job_info.JobInfo``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from work_server.blobs import BlobStore
from work_server.job_info import JobInfo
from work_server.job_spec import JobSpec
from work_server.ml.datasets import Dataset, load_dataset
from work_server.ml.shards import encode_shard, encode_weights
from work_server.ml.split import split_indices
from work_server.ml.uploaded import decode_dataset
from yadml_trainer.models import initial_state


class JobStartError(Exception):
    """A permanent problem with a job's data (empty shard, unknown dataset...)."""


@dataclass(frozen=True)
class JobData:
    """What ``prepare_job_data`` stored: the job's info and the test blob's size (the other
    blob sizes are in the info)."""

    info: JobInfo
    test_bytes: int


def _dataset(
    spec: JobSpec, blobs: BlobStore, data_dir: Path | None, fashion_dir: Path | None
) -> Dataset:
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
    return dataset


def prepare_job_data(
    spec: JobSpec, blobs: BlobStore, *, data_dir: Path | None, fashion_dir: Path | None
) -> JobData:
    """Load, split, encode and store everything a job needs. Raises ``JobStartError`` (or
    the loader's ``ValueError``/``OSError``) for a permanent problem with the job's data."""
    dataset = _dataset(spec, blobs, data_dir, fashion_dir)
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
    info = JobInfo(
        shard_sha256=shard_sha,
        shard_sizes=sizes,
        shard_bytes=nbytes,
        test_sha256=blobs.put(test),
        num_train_samples=len(dataset.train_labels),
        num_test_samples=len(dataset.test_labels),
        num_classes=dataset.num_classes,
        weights_bytes=len(weights),
        initial_weights_sha256=blobs.put(weights),
    )
    return JobData(info=info, test_bytes=len(test))
