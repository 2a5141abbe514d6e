"""A job as the operator submits it (``POST /api/v1/jobs``, the web start form, the demo):
what to train, how to split the data, merge the results and replicate the work units.

Only the server parses these (a volunteer receives a ``TaskConfig``), so they live here,
next to the merge policies whose specs they embed, not in ``yadml_common.wire``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from work_server.merge import MergeSpec, SimpleAverageSpec
from yadml_common.wire import Runtime, Sha256, UpdateEncoding, WireModel, default_runtimes

__all__ = ["JobSpec", "ReplicationPolicy", "SplitSpec"]


class SplitSpec(WireModel):
    method: Literal["random", "stratified", "dirichlet", "shards"] = "stratified"
    alpha: float = Field(default=0.5, gt=0, le=1000, description="dirichlet concentration")
    labels_per_shard: int = Field(default=2, ge=1, le=1000, description="'shards' method")


class ReplicationPolicy(WireModel):
    min_quorum: int = Field(default=1, ge=1, le=10)
    target_nresults: int = Field(default=1, ge=1, le=20)
    max_error_results: int = Field(default=3, ge=0, le=100)
    max_total_results: int = Field(default=6, ge=1, le=100)
    delay_bound_s: float = Field(default=600.0, gt=0, le=30 * 86400)
    tolerance: float = Field(default=1e-4, ge=0, le=1, description="relative replica tolerance")
    adaptive: bool = Field(
        default=False,
        description="BOINC adaptive replication: work units start unreplicated; a claim by a "
        "host that is not trusted for the runtime (fewer than trust_threshold consecutive "
        "valid results), or a random spot check, raises the unit to max(2, min_quorum) replicas",
    )
    trust_threshold: int = Field(default=10, ge=1, le=10000)
    spot_check_rate: float = Field(default=0.1, ge=0, le=1)


class JobSpec(WireModel):
    dataset: Literal["mnist", "fashion-mnist", "digits", "upload"]
    #: with ``dataset = "upload"``: the sha256 of a dataset uploaded from the web pages
    dataset_sha256: Sha256 | None = None
    model: Literal["lenet"] = "lenet"
    shards: int = Field(default=4, ge=1, le=1000)
    split: SplitSpec = Field(default_factory=SplitSpec)
    merge: MergeSpec = Field(
        default_factory=SimpleAverageSpec,
        description="the merge policy (method) and its options; without a method: simple_average",
    )
    rounds: int = Field(default=5, ge=1, le=1000)
    local_epochs: int = Field(default=1, ge=1, le=100)
    batch_size: int = Field(default=64, ge=1, le=8192)
    lr: float = Field(default=0.001, gt=0, le=10)
    optimizer: Literal["adam", "sgd"] = "adam"
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    update_encoding: UpdateEncoding = Field(
        default="fp32",
        description="how volunteers upload results: fp32 weights, or the delta from the "
        "round's weights as fp16 (half the bytes) or int8 with per-channel scales (a quarter); "
        "the server decodes to float32 before validation and merging. With replication, "
        "int8 needs a tolerance of about 1e-3 (one quantisation step)",
    )
    replication: ReplicationPolicy = Field(default_factory=ReplicationPolicy)
    runtimes: list[Runtime] = Field(default_factory=default_runtimes, min_length=1, max_length=3)
    round_min_fraction: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="after the round deadline, close the round once this fraction of its "
        "work units has a canonical result",
    )
    round_timeout_s: float | None = Field(
        default=None, gt=0, description="round deadline; default 2 x delay_bound_s"
    )
    train_subset: int | None = Field(
        default=None,
        ge=1,
        description="use only this many training samples (a seeded random subset, taken "
        "before splitting); None = all. For small benchmarks and demos",
    )

    @model_validator(mode="after")
    def _uploaded_dataset(self) -> JobSpec:
        if (self.dataset == "upload") != (self.dataset_sha256 is not None):
            raise ValueError('dataset_sha256 is required with dataset "upload", and only then')
        return self
