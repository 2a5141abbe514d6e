"""Merge policies: how a round's canonical results become the next global weights."""

from __future__ import annotations

from work_server.merge.base import MergePolicy, Update
from work_server.merge.median import Median
from work_server.merge.regularized import Regularized
from work_server.merge.simple_average import SimpleAverage
from work_server.merge.trimmed_mean import TrimmedMean
from yadml_common.wire import MergeSpec

__all__ = [
    "Median",
    "MergePolicy",
    "Regularized",
    "SimpleAverage",
    "TrimmedMean",
    "Update",
    "get_policy",
]


def get_policy(spec: MergeSpec) -> MergePolicy:
    """The policy a job's :class:`~yadml_common.wire.MergeSpec` names, with its parameters."""
    if spec.method == "simple_average":
        return SimpleAverage()
    if spec.method == "median":
        return Median()
    if spec.method == "trimmed_mean":
        return TrimmedMean(spec.trim_ratio)
    if spec.method == "regularized":
        return Regularized(spec.factor)
    raise ValueError(f"unknown merge method {spec.method!r}")  # pragma: no cover
