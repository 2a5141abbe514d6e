"""Merge policies: how a round's canonical results become the next global weights."""

from __future__ import annotations

from work_server.merge.base import MergePolicy, Update
from work_server.merge.clipping import Clipped
from work_server.merge.krum import Krum, MultiKrum
from work_server.merge.median import Median
from work_server.merge.regularized import Regularized
from work_server.merge.screening import screen_updates
from work_server.merge.simple_average import SimpleAverage
from work_server.merge.trimmed_mean import TrimmedMean
from yadml_common.wire import MergeSpec

__all__ = [
    "Clipped",
    "Krum",
    "Median",
    "MergePolicy",
    "MultiKrum",
    "Regularized",
    "SimpleAverage",
    "TrimmedMean",
    "Update",
    "get_policy",
    "screen_updates",
]


def _base_policy(spec: MergeSpec) -> MergePolicy:
    if spec.method == "simple_average":
        return SimpleAverage()
    if spec.method == "median":
        return Median()
    if spec.method == "trimmed_mean":
        return TrimmedMean(spec.trim_ratio)
    if spec.method == "regularized":
        return Regularized(spec.factor)
    if spec.method == "krum":
        return Krum(spec.byzantine_f)
    if spec.method == "multi_krum":
        return MultiKrum(spec.byzantine_f, spec.multi_krum_m)
    raise ValueError(f"unknown merge method {spec.method!r}")  # pragma: no cover


def get_policy(spec: MergeSpec) -> MergePolicy:
    """The policy a job's :class:`~yadml_common.wire.MergeSpec` names, with its parameters,
    wrapped in :class:`Clipped` when ``spec.clip_norm`` is set. (Screening,
    ``spec.screen_norm_ratio``, is the caller's step: it decides which results are invalid.)"""
    policy = _base_policy(spec)
    if spec.clip_norm is not None:
        return Clipped(policy, spec.clip_norm)
    return policy
