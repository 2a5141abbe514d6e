"""Database tables: BOINC's job/round/work unit/result/host model, kept in SQL so a restart
loses nothing. Times are UNIX seconds (float) throughout: one clock, easy to inject in tests.

Daemons hand work to each other only through the state columns here:

* ``WorkUnit.transition_time`` <= now  -> the transitioner looks at the work unit;
* ``WorkUnit.need_validate``          -> the validator looks at it;
* ``WorkUnit.canonical_result_id`` / ``WorkUnit.state`` -> the round closer closes rounds;
* blobs no row references            -> the file deleter removes them.
"""

from __future__ import annotations

import enum

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

FAR_FUTURE = 1e18  # transition_time meaning "nothing to do"


class JobState(enum.StrEnum):
    pending = "pending"  # accepted, shards not built yet
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class RoundState(enum.StrEnum):
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


class WorkUnitState(enum.StrEnum):
    active = "active"  # still wants results
    done = "done"  # has a canonical result
    failed = "failed"  # too many errors / results; gave up
    cancelled = "cancelled"  # round closed without it, or job cancelled


class ServerState(enum.StrEnum):
    unsent = "unsent"
    in_progress = "in_progress"
    over = "over"


class Outcome(enum.StrEnum):
    init = "init"
    success = "success"
    client_error = "client_error"
    no_reply = "no_reply"
    didnt_need = "didnt_need"
    validate_error = "validate_error"


class ValidateState(enum.StrEnum):
    init = "init"  # not looked at yet
    valid = "valid"
    invalid = "invalid"
    inconclusive = "inconclusive"  # quorum not reached yet
    too_late = "too_late"  # arrived after its work unit was finished; never merged


class Job(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    state: str = Field(default=JobState.pending, index=True)
    spec: dict = Field(sa_column=Column(JSON, nullable=False))  # type: ignore[type-arg]
    current_round: int = 0
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    #: sha256 of the current global weights (the final model once completed)
    model_sha256: str | None = None
    report_path: str | None = None
    #: data facts fixed at start (num test samples, shard sizes): JSON
    info: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # type: ignore[type-arg]


class Round(SQLModel, table=True):
    __table_args__ = (Index("ix_round_job_number", "job_id", "number", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    number: int  # 1-based
    state: str = Field(default=RoundState.running, index=True)
    weights_sha256: str  # global weights this round trains from
    started_at: float
    deadline: float  # after this the round may close at round_min_fraction
    closed_at: float | None = None
    #: RoundMetrics fields (without round/duration) once evaluated
    metrics: dict | None = Field(default=None, sa_column=Column(JSON(none_as_null=True)))  # type: ignore[type-arg]
    results_success: int = 0
    results_error: int = 0
    results_no_reply: int = 0


class WorkUnit(SQLModel, table=True):
    __table_args__ = (Index("ix_wu_transition", "transition_time"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    round_id: int = Field(foreign_key="round.id", index=True)
    shard_index: int
    shard_sha256: str
    weights_sha256: str
    num_samples: int
    task: dict = Field(sa_column=Column(JSON, nullable=False))  # type: ignore[type-arg]  # TaskConfig
    runtimes: list = Field(sa_column=Column(JSON, nullable=False))  # type: ignore[type-arg]
    state: str = Field(default=WorkUnitState.active, index=True)
    min_quorum: int = 1
    target_nresults: int = 1
    max_error_results: int = 3
    max_total_results: int = 6
    delay_bound_s: float = 600.0
    tolerance: float = 1e-4
    max_output_bytes: int
    transition_time: float = FAR_FUTURE
    need_validate: bool = Field(default=False, index=True)
    canonical_result_id: int | None = None
    error: str | None = None
    created_at: float
    #: adaptive replication (``work_server.services.trust``): the unit starts with
    #: ``min_quorum = target_nresults = 1``; dispatch raises both to ``adaptive_quorum`` when an
    #: untrusted host claims it (or on a random spot check)
    adaptive: bool = False
    adaptive_quorum: int = 2
    trust_threshold: int = 10
    spot_check_rate: float = 0.0


class Result(SQLModel, table=True):
    __table_args__ = (
        Index("ix_result_dispatch", "server_state", "workunit_id"),
        Index("ix_result_host_state", "host_id", "server_state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    workunit_id: int = Field(foreign_key="workunit.id", index=True)
    host_id: int | None = Field(default=None, foreign_key="host.id")
    server_state: str = Field(default=ServerState.unsent)
    outcome: str = Field(default=Outcome.init)
    validate_state: str = Field(default=ValidateState.init)
    runtime: str | None = None
    created_at: float
    sent_at: float | None = None
    deadline: float | None = None
    received_at: float | None = None
    output_sha256: str | None = None
    output_size: int | None = None
    #: TrainReport fields once uploaded: train_loss, samples, elapsed_s, epochs
    report: dict | None = Field(default=None, sa_column=Column(JSON(none_as_null=True)))  # type: ignore[type-arg]
    fraction_done: float = 0.0
    error_reason: str | None = None
    error_detail: str | None = None
    late: bool = False


class Host(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    #: private: seen by the operators and the host itself only
    name: str
    #: the public name the volunteer chose (none: anonymous, listed nowhere public)
    display_name: str | None = Field(default=None, max_length=64)
    os: str
    arch: str
    cpus: int
    memory_mb: int
    runtimes: list = Field(sa_column=Column(JSON, nullable=False))  # type: ignore[type-arg]
    token_hash: str = Field(index=True, unique=True)
    created_at: float
    last_contact: float
    banned: bool = False
    results_valid: int = 0
    results_invalid: int = 0
    results_error: int = 0
    consecutive_valid: int = 0
    credit: float = 0.0


class HostRuntimeTrust(SQLModel, table=True):
    """Per (host, runtime) reliability, BOINC's ``host_app_version``: the basis of adaptive
    replication and of the daily quota (``work_server.services.trust``). ``Host`` keeps the
    totals over all runtimes."""

    host_id: int = Field(foreign_key="host.id", primary_key=True)
    runtime: str = Field(primary_key=True)
    consecutive_valid: int = 0
    valid: int = 0
    invalid: int = 0
    error: int = 0
    daily_quota: int
    max_daily_quota: int
    quota_used_today: int = 0
    day: int = 0  # UNIX day (now // 86400) that quota_used_today counts


class Blob(SQLModel, table=True):
    sha256: str = Field(primary_key=True)
    size: int
    kind: str  # shard | weights | result | model
    created_at: float


class DaemonRun(SQLModel, table=True):
    """When each daemon last ran (for the status API and page)."""

    name: str = Field(primary_key=True)
    last_run: float
    last_error: str | None = None


class Operator(SQLModel, table=True):
    """A person who may use the web pages (``yadml-server operator create``); the password is
    stored only as an argon2id hash."""

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(index=True, unique=True)
    password_hash: str
    created_at: float
    last_login_at: float | None = None


class WebSession(SQLModel, table=True):
    """A logged-in browser. The cookie holds a random token; only its sha256 is stored here.
    ``csrf_token`` is the synchronizer token every form of this session must send back."""

    token_hash: str = Field(primary_key=True)
    operator_id: int = Field(foreign_key="operator.id", index=True)
    csrf_token: str
    created_at: float
    expires_at: float = Field(index=True)
    last_seen: float


class UploadedDataset(SQLModel, table=True):
    """A training set an operator uploaded (validated, re-encoded as a safetensors blob with
    ``train_images``/``train_labels``/``test_images``/``test_labels``); jobs use it with
    ``JobSpec.dataset = "upload"`` and ``dataset_sha256``."""

    sha256: str = Field(primary_key=True)
    name: str
    size: int
    num_train: int
    num_test: int
    created_at: float


class ApiToken(SQLModel, table=True):
    """A personal API token of an operator (``yadml-server token create``, ``POST
    /api/v1/tokens``, the ``/tokens`` page; ``work_server.services.api_tokens``). The token
    is 256 random bits shown once; only its sha256 is stored. ``scopes``: sorted names out of
    ``read``, ``jobs``, ``hosts``, ``admin``. A token stops working at ``expires_at`` or once
    ``revoked_at`` is set; revoked rows are kept, so the audit log's token ids stay
    meaningful."""

    id: int | None = Field(default=None, primary_key=True)
    operator_id: int = Field(foreign_key="operator.id", index=True)
    token_hash: str = Field(index=True, unique=True)
    scopes: list = Field(sa_column=Column(JSON, nullable=False))  # type: ignore[type-arg]
    note: str = ""
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None


class AuditEvent(SQLModel, table=True):
    """One state-changing operator action (``work_server.services.audit``): who
    (``operator`` by name, and the credential: ``via`` api/web/cli, ``token_id`` of a
    personal token, none for the bootstrap operator token, ``session_tag`` of a web
    session), what (``action``, ``target``, ``detail``), when (``at``) and from where
    (``client_ip``, through trusted proxies). Rows are only ever added; the ``id`` orders
    them and pages the log."""

    id: int | None = Field(default=None, primary_key=True)
    at: float
    operator: str
    via: str
    token_id: int | None = None
    session_tag: str | None = None
    action: str = Field(index=True)
    target: str
    detail: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # type: ignore[type-arg]
    client_ip: str | None = None
