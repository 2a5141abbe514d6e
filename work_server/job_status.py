"""A job as the operator API reports it (``GET /api/v1/jobs[/{id}]``) and as the job report
lists its rounds: the spec, the state and every evaluated round's metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from work_server.job_spec import JobSpec
from work_server.ml.evaluate import EvaluationMetrics
from yadml_common.wire import WireModel

__all__ = ["JobList", "JobState", "JobStatus", "RoundMetrics"]


class _RoundNumber(WireModel):
    round: int


class RoundMetrics(EvaluationMetrics, _RoundNumber):
    """One evaluated round: its number, the test metrics of its merged weights
    (:class:`~work_server.ml.evaluate.EvaluationMetrics`), its result counts and duration.

    The bases are in this order so that the JSON keys are too: round, metrics, counts."""

    results_success: int
    results_error: int
    results_no_reply: int
    duration_s: float


JobState = Literal["pending", "running", "completed", "failed", "cancelled"]


class JobStatus(WireModel):
    id: int
    state: JobState
    spec: JobSpec
    current_round: int
    rounds: list[RoundMetrics]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    model_sha256: str | None
    report_path: str | None


class JobList(WireModel):
    jobs: list[JobStatus]
