"""``Job.info``: the data facts of a job, fixed when the work generator starts it.

``Job.info`` is a JSON column: empty (``{}``) while the job is pending, then this model's
fields. The shard, test-split and initial-weights blobs are built once and reused by every
round, so their hashes live here (the file deleter keeps them while the job is unfinished);
the round closer adds the latest evaluation's confusion matrix.

The JSON is exactly what the untyped dict held before (the same keys; ``confusion_matrix``
absent until the first round is evaluated), so rows written by earlier versions load as they
are. Unknown keys are rejected: a typo is a bug, not a new field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt

from work_server.db.models import Job

__all__ = ["JobInfo", "JobNotStarted", "from_json", "load", "store"]


class JobNotStarted(ValueError):
    """The job has no data yet (``Job.info`` is empty until the work generator starts it)."""


class JobInfo(BaseModel):
    """What ``Job.info`` holds once a job has started (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shard_sha256: list[str] = Field(min_length=1)  # one blob per shard, in shard order
    shard_sizes: list[PositiveInt]  # samples per shard
    shard_bytes: list[NonNegativeInt]  # blob sizes
    test_sha256: str  # the test split, a shard-format blob
    num_train_samples: NonNegativeInt
    num_test_samples: NonNegativeInt
    num_classes: PositiveInt = 10
    weights_bytes: NonNegativeInt  # size of a weights blob of this model
    initial_weights_sha256: str
    #: the latest round's evaluation (absent until the first round closes)
    confusion_matrix: list[list[int]] | None = None

    def blob_hashes(self) -> list[str]:
        """The blobs this job's rounds train and evaluate on (shards, test split, initial
        weights)."""
        return [*self.shard_sha256, self.test_sha256, self.initial_weights_sha256]

    def to_json(self) -> dict[str, Any]:
        """The column's value: no ``confusion_matrix`` key until there is one."""
        return self.model_dump(mode="json", exclude_none=True)


def from_json(raw: Mapping[str, Any] | None) -> JobInfo | None:
    """A ``Job.info`` value as a ``JobInfo``; None while the job has not started (empty)."""
    if not raw:
        return None
    return JobInfo.model_validate(dict(raw))


def load(job: Job) -> JobInfo:
    """The info of a started job; ``JobNotStarted`` when it has none yet."""
    info = from_json(job.info)
    if info is None:
        raise JobNotStarted(f"job {job.id} has not started: no data yet")
    return info


def store(job: Job, info: JobInfo) -> None:
    """Set ``job.info`` (the caller adds the job to its session and commits)."""
    job.info = info.to_json()
