"""Wire models shared by the work server and the volunteer client.

This is the only module both sides import: the JSON bodies of the HTTP work-unit API,
and the names used inside the safetensors files that travel between them. Every model
forbids unknown fields and bounds its sizes, because volunteers are anonymous.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

API_PREFIX = "/api/v1"

#: Key of the JSON training report inside an uploaded result's safetensors ``__metadata__``.
REPORT_METADATA_KEY = "report"

#: Names of a work unit's inputs (each a content-addressed blob).
INPUT_SHARD = "shard"
INPUT_WEIGHTS = "weights"

#: Tensor names inside a shard blob: ``images`` uint8 [N, 28, 28], ``labels`` int64 [N].
SHARD_IMAGES = "images"
SHARD_LABELS = "labels"

Runtime = Literal["process", "docker", "vm"]
#: How a result's weights travel (``yadml_common.encoding``): float32 weights, or the delta
#: from the input weights as float16 or int8 with per-channel float32 scales.
UpdateEncoding = Literal["fp32", "fp16", "int8"]
RUNTIMES: tuple[Runtime, ...] = ("process", "docker", "vm")

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
#: A container image named by digest: an image id ``sha256:<hex>`` or ``name@sha256:<hex>``.
IMAGE_DIGEST_PATTERN = r"^([a-z0-9][a-z0-9._/:-]*@)?sha256:[0-9a-f]{64}$"
ShortText = Annotated[str, Field(min_length=1, max_length=128)]


def _default_runtimes() -> list[Runtime]:
    return ["process"]


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- errors


class ErrorBody(WireModel):
    """Every 4xx/5xx answer of the API: a machine-readable code and a human reason."""

    error: str
    detail: str


# --------------------------------------------------------------------------- hosts


class HostRegisterRequest(WireModel):
    name: ShortText
    os: ShortText = "unknown"
    arch: ShortText = "unknown"
    cpus: int = Field(default=1, ge=1, le=4096)
    memory_mb: int = Field(default=1024, ge=64, le=16 * 1024 * 1024)
    runtimes: list[Runtime] = Field(default_factory=_default_runtimes, min_length=1, max_length=3)


class HostRegisterResponse(WireModel):
    host_id: int
    host_token: str


# --------------------------------------------------------------------------- work


class TaskConfig(WireModel):
    """What the trainer needs besides its input blobs. Deterministic given the same inputs."""

    model: ShortText = "lenet"
    dataset: ShortText = "mnist"
    local_epochs: int = Field(default=1, ge=1, le=100)
    batch_size: int = Field(default=64, ge=1, le=8192)
    lr: float = Field(default=0.001, gt=0, le=10)
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = Field(default=0.0, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    update_encoding: UpdateEncoding = "fp32"


class WorkRequest(WireModel):
    max_units: int = Field(default=1, ge=1, le=16)
    runtimes: list[Runtime] | None = Field(default=None, max_length=3)


class WorkInput(WireModel):
    name: ShortText
    sha256: Sha256
    size: int = Field(ge=0)
    url: str


class UploadSpec(WireModel):
    url: str
    max_bytes: int = Field(ge=1)


Fingerprint = Annotated[str, Field(pattern=r"^SHA256:[A-Za-z0-9+/]{43}$")]
Base64 = Annotated[str, Field(pattern=r"^[A-Za-z0-9+/]*={0,2}$", max_length=256)]


class WorkSignature(WireModel):
    """Ed25519 signature of a work unit's manifest (``yadml_common.signing``)."""

    algorithm: Literal["ed25519"] = "ed25519"
    key_fingerprint: Fingerprint
    value: Base64


class WorkUnitAssignment(WireModel):
    """One unit of work. Everything but ``signature`` is its signed manifest."""

    result_id: int
    workunit_id: int
    job_id: int
    round: int
    deadline: datetime
    runtime: Runtime
    inputs: list[WorkInput]
    task: TaskConfig
    upload: UploadSpec
    #: docker runtime: the worker image by digest (``sha256:<id>`` or ``name@sha256:<digest>``)
    image: str | None = Field(default=None, max_length=256, pattern=IMAGE_DIGEST_PATTERN)
    signature: WorkSignature | None = None


class WorkResponse(WireModel):
    units: list[WorkUnitAssignment]
    retry_after_s: float = Field(ge=0)


FailureReason = Literal[
    "download_error",
    "executor_error",
    "timeout",
    "out_of_memory",
    "crash",
    "aborted",
    "invalid_input",
    "other",
]


class FailureReport(WireModel):
    reason: FailureReason
    detail: str = Field(default="", max_length=16384)


#: a database row id sent by a client: bounded so it fits a 64-bit SQL INTEGER
RowId = Annotated[int, Field(ge=1, le=2**63 - 1)]


class RunningUnit(WireModel):
    result_id: RowId
    fraction_done: float = Field(default=0.0, ge=0, le=1)


class HeartbeatRequest(WireModel):
    running: list[RunningUnit] = Field(default_factory=list, max_length=256)


class HeartbeatResponse(WireModel):
    abort: list[int]


class ProjectKey(WireModel):
    """A public key of the project. A key made by ``yadml-server key rotate`` carries an
    endorsement: its raw public key signed by the key it replaced."""

    fingerprint: Fingerprint
    public_key: Base64 = Field(description="raw 32-byte Ed25519 public key, base64")
    current: bool
    endorsed_by: Fingerprint | None = None
    endorsement: Base64 | None = None


class ProjectInfo(WireModel):
    """``GET /api/v1/project``: what a client pins when it attaches."""

    name: str
    fingerprint: Fingerprint = Field(description="fingerprint of the current signing key")
    public_keys: list[ProjectKey]


class HostBanStatus(WireModel):
    host_id: int
    banned: bool


class UploadAccepted(WireModel):
    result_id: int
    sha256: Sha256
    duplicate: bool = False
    late: bool = False


class TrainReport(WireModel):
    """The JSON report the trainer stores under ``__metadata__["report"]`` of its output."""

    train_loss: float
    samples: int = Field(ge=1)
    elapsed_s: float = Field(ge=0)
    epochs: int = Field(default=1, ge=1)


# --------------------------------------------------------------------------- jobs (operator)


class SplitSpec(WireModel):
    method: Literal["random", "stratified", "dirichlet", "shards"] = "stratified"
    alpha: float = Field(default=0.5, gt=0, le=1000, description="dirichlet concentration")
    labels_per_shard: int = Field(default=2, ge=1, le=1000, description="'shards' method")


class MergeSpec(WireModel):
    """How a round's canonical results are combined (``work_server.merge``).

    Order of operations in the aggregator: screening (``screen_norm_ratio``) drops outlying
    updates, clipping (``clip_norm``) bounds the rest, then ``method`` combines them.
    """

    method: Literal[
        "simple_average", "median", "trimmed_mean", "regularized", "krum", "multi_krum"
    ] = "simple_average"
    trim_ratio: float = Field(default=0.1, ge=0, lt=0.5, description="trimmed_mean: cut per side")
    factor: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="regularized: new = factor*previous + (1-factor)*sample-weighted average",
    )
    byzantine_f: int | None = Field(
        default=None,
        ge=0,
        le=498,
        description="krum/multi_krum: assumed Byzantine updates per round; default "
        "floor((K-3)/2) for K updates; lowered to that when a round has too few updates",
    )
    multi_krum_m: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="multi_krum: how many lowest-score updates are averaged; default and "
        "at most K - f",
    )
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
    merge: MergeSpec = Field(default_factory=MergeSpec)
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
    runtimes: list[Runtime] = Field(default_factory=_default_runtimes, min_length=1, max_length=3)
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


class RoundMetrics(WireModel):
    round: int
    accuracy: float
    loss: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    roc_auc_macro: float
    average_precision_macro: float
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


class HostTrust(WireModel):
    """Adaptive-replication state of one (host, runtime) pair (``work_server.services.trust``)."""

    host_id: int
    name: str
    runtime: str
    consecutive_valid: int
    valid: int
    invalid: int
    error: int
    daily_quota: int
    quota_used_today: int
    trusted: bool


class ServerStatus(WireModel):
    hosts_total: int
    hosts_active: int
    jobs_running: int
    results_unsent: int
    results_in_progress: int
    results_over: dict[str, int]
    results_last_hour: int
    daemons: dict[str, datetime | None]
    #: (host, runtime) pairs trusted for adaptive replication / all pairs with a record
    hosts_trusted: int = 0
    host_trust: list[HostTrust] = Field(default_factory=list)
