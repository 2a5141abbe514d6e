"""Merge policies: how a round's canonical results become the next global weights.

A job's ``merge`` object is a :data:`MergeSpec`: one spec model per policy, each declared in
its policy's module, told apart by ``method`` (see :mod:`work_server.merge.spec`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, get_args

from pydantic import BeforeValidator, Field, TypeAdapter

from work_server.merge.base import MergePolicy, Update
from work_server.merge.clipping import Clipped
from work_server.merge.krum import Krum, KrumSpec, MultiKrum, MultiKrumSpec
from work_server.merge.median import Median, MedianSpec
from work_server.merge.regularized import Regularized, RegularizedSpec
from work_server.merge.screening import screen_updates
from work_server.merge.simple_average import SimpleAverage, SimpleAverageSpec
from work_server.merge.spec import MergeSpecBase
from work_server.merge.trimmed_mean import TrimmedMean, TrimmedMeanSpec

__all__ = [
    "MERGE_METHODS",
    "MERGE_SPECS",
    "Clipped",
    "Krum",
    "KrumSpec",
    "Median",
    "MedianSpec",
    "MergePolicy",
    "MergeSpec",
    "MergeSpecBase",
    "MultiKrum",
    "MultiKrumSpec",
    "Regularized",
    "RegularizedSpec",
    "SimpleAverage",
    "SimpleAverageSpec",
    "TrimmedMean",
    "TrimmedMeanSpec",
    "Update",
    "get_policy",
    "parse_merge_spec",
    "screen_updates",
]


def _method_defaults_to_simple_average(data: Any) -> Any:
    # ``method`` was optional before specs were split per policy, with this default
    if isinstance(data, dict) and "method" not in data:
        return {"method": SimpleAverageSpec().method, **data}
    return data


MergeSpec = Annotated[
    SimpleAverageSpec | MedianSpec | TrimmedMeanSpec | RegularizedSpec | KrumSpec | MultiKrumSpec,
    Field(discriminator="method"),
    BeforeValidator(_method_defaults_to_simple_average),
]

#: every policy's spec model, in the order of :data:`MergeSpec`
MERGE_SPECS: tuple[type[MergeSpecBase], ...] = get_args(get_args(MergeSpec)[0])
#: the ``method`` names, in the same order
MERGE_METHODS: tuple[str, ...] = tuple(str(s.model_fields["method"].default) for s in MERGE_SPECS)


def parse_merge_spec(data: Mapping[str, Any]) -> MergeSpec:
    """The spec of a job's ``merge`` object; raises ``pydantic.ValidationError``."""
    adapter: TypeAdapter[MergeSpec] = TypeAdapter(MergeSpec)
    return adapter.validate_python(data)


def get_policy(spec: MergeSpec) -> MergePolicy:
    """The policy ``spec`` names, with its options, wrapped in :class:`Clipped` when
    ``spec.clip_norm`` is set. (Screening, ``spec.screen_norm_ratio``, is the caller's step:
    it decides which results are invalid.)"""
    return spec.policy()
