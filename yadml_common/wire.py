"""Wire models shared by the work server and the volunteer client.

This is the only module both sides import: the JSON bodies of the HTTP work-unit API,
and the names used inside the safetensors files that travel between them. Every model
forbids unknown fields and bounds its sizes, because volunteers are anonymous.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

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


def default_runtimes() -> list[Runtime]:
    return ["process"]


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- errors


class ErrorBody(WireModel):
    """Every 4xx/5xx answer of the API: a machine-readable code and a human reason."""

    error: str
    detail: str


# --------------------------------------------------------------------------- hosts


#: markup, or an HTML character reference: ``<b>``, ``&lt;``, ``&#60;``
_HTML_LIKE = re.compile(r"[<>]|&(#\d+|#x[0-9a-fA-F]+|[A-Za-z]\w*);")


def _plain_display_name(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be printable text (no control or formatting characters)")
    if _HTML_LIKE.search(value):
        raise ValueError("must be plain text, not HTML (no <, > or &...; references)")
    return value


#: A public display name: trimmed, 1-64 printable characters, no markup. Published on the
#: public status page and ``GET /api/v1/status`` (the pages escape it anyway).
DisplayName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64),
    AfterValidator(_plain_display_name),
]


class HostRegisterRequest(WireModel):
    #: private: seen by the project's operators and the host itself only
    name: ShortText
    #: public, by choice: without it the host is listed nowhere public
    display_name: DisplayName | None = None
    os: ShortText = "unknown"
    arch: ShortText = "unknown"
    cpus: int = Field(default=1, ge=1, le=4096)
    memory_mb: int = Field(default=1024, ge=64, le=16 * 1024 * 1024)
    runtimes: list[Runtime] = Field(default_factory=default_runtimes, min_length=1, max_length=3)


class HostRegisterResponse(WireModel):
    host_id: int
    host_token: str


class HostRecord(WireModel):
    """``GET /api/v1/hosts/me``: a host's own record, read with its host token. The name is
    private: only the host itself and the project's operators ever see it."""

    host_id: int
    name: str
    #: the public name the volunteer chose; none: anonymous
    display_name: str | None = None
    os: str
    arch: str
    cpus: int
    memory_mb: int
    runtimes: list[str]
    created_at: datetime
    results_valid: int
    results_invalid: int
    results_error: int
    credit: float


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


#: The header that carries a unit's upload grant on ``PUT /results/{id}``. Credentials travel
#: in headers, never in URLs: URLs end up in proxy and access logs.
UPLOAD_GRANT_HEADER = "X-Upload-Grant"


class UploadSpec(WireModel):
    """Where and how to upload a unit's result.

    ``url`` has no query string; ``grant`` (the server's HMAC upload grant for this result
    and host) is sent as the :data:`UPLOAD_GRANT_HEADER` header.
    """

    url: str
    grant: str = Field(pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$", max_length=512)
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


class DisplayNameUpdate(WireModel):
    """``PATCH /api/v1/hosts/me``: choose, change (a name) or withdraw (``null``) the host's
    public display name."""

    display_name: DisplayName | None


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


# --------------------------------------------------------------------------- operator status


class PublicVolunteer(WireModel):
    """One of the top volunteers by credit, as the public sees it: only the display name its
    volunteer chose, and its credit."""

    display_name: str
    credit: float


class ServerStatus(WireModel):
    """``GET /api/v1/status``, public: counts and aggregates only, never a host's name or a
    per-host row (those are the operator's ``GET /api/v1/hosts``). ``top_volunteers`` lists
    only hosts whose volunteers chose a public display name, under that name."""

    hosts_total: int
    hosts_active: int
    jobs_running: int
    results_unsent: int
    results_in_progress: int
    results_over: dict[str, int]
    results_last_hour: int
    daemons: dict[str, datetime | None]
    #: (host, runtime) pairs trusted for adaptive replication
    hosts_trusted: int = 0
    #: the top 10 by credit among the hosts with a display name (not banned)
    top_volunteers: list[PublicVolunteer] = Field(default_factory=list)
