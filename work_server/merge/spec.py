"""What every policy's spec shares: the JSON a job's ``merge`` object is, one pydantic model
per policy (declared next to the policy), discriminated by ``method``.

:class:`MergeSpecBase` holds the robustness options that apply to any method and builds the
policy. Order of operations in the round closer: screening (``screen_norm_ratio``) drops
outlying updates, clipping (``clip_norm``) bounds the rest, then ``method`` combines them.

Every spec forbids unknown keys, with one exception for compatibility: until specs were split
per policy, a ``merge`` object carried every policy's options (``{"method": "median",
"trim_ratio": 0.1, "factor": 0.5, "byzantine_f": null, "multi_krum_m": null, ...}``); job JSON
like that sits in databases and is still sent by older clients. Those keys
(:data:`FLAT_SPEC_OPTIONS`) are ignored by a spec that does not own them, as they always were.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from work_server.merge.base import MergePolicy
from work_server.merge.clipping import Clipped
from yadml_common.wire import WireModel

__all__ = ["FLAT_SPEC_OPTIONS", "MergeSpecBase"]

#: The policy options of the flat, pre-union merge object (see the module docstring); new
#: policies' options never join this set.
FLAT_SPEC_OPTIONS = frozenset({"trim_ratio", "factor", "byzantine_f", "multi_krum_m"})


def _method_is_required(schema: dict[str, Any]) -> None:
    # The document names the discriminator; a missing method still parses as simple_average.
    required = schema.setdefault("required", [])
    if "method" not in required:
        required.insert(0, "method")


class MergeSpecBase(WireModel):
    """A merge policy and its options; each policy's spec narrows ``method`` to its name."""

    model_config = ConfigDict(json_schema_extra=_method_is_required)

    method: str
    clip_norm: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="any method: clip each update's delta from the previous weights to this "
        "L2 norm (over all float tensors) before merging; None = off",
    )
    screen_norm_ratio: float | None = Field(
        default=None,
        ge=1,
        allow_inf_nan=False,
        description="any method: reject (as invalid) updates whose delta norm exceeds this "
        "times the round's median delta norm (rounds of 3+ updates), and non-finite ones; "
        "None = off",
    )

    @model_validator(mode="before")
    @classmethod
    def _ignore_other_policies_flat_options(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        owned = cls.model_fields
        return {k: v for k, v in data.items() if k in owned or k not in FLAT_SPEC_OPTIONS}

    @abstractmethod
    def build(self) -> MergePolicy:
        """This spec's policy with its options (without clipping)."""

    def policy(self) -> MergePolicy:
        """The policy, wrapped in :class:`Clipped` when ``clip_norm`` is set. (Screening is the
        caller's step: it decides which results are invalid.)"""
        inner = self.build()
        if self.clip_norm is None:
            return inner
        return Clipped(inner, self.clip_norm)
