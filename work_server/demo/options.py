"""Demo options, constants and the job spec the demo submits.

Options that mirror a job or server setting take their defaults from ``JobSpec`` and
``ServerConfig`` (:data:`JOB_DEFAULTS`), so the demo cannot drift from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pydantic

from work_server.config import DEFAULT_RUNS_DIR, ServerConfig
from work_server.job_spec import JobSpec, SplitSpec
from work_server.merge import MERGE_METHODS as MERGE_METHODS  # the --merge choices
from yadml_common.wire import RUNTIMES

HOST = "127.0.0.1"
FINAL_STATES = frozenset({"completed", "failed", "cancelled"})
#: Marks a state directory as the demo's own, so that it may be wiped on the next run.
STATE_MARKER = ".yadml-demo"
POLL_INTERVAL_S = 0.5
DAEMON_INTERVAL_S = "0.5"


def _literal_choices(model: type[pydantic.BaseModel], name: str) -> tuple[str, ...]:
    return tuple(str(v) for v in get_args(model.model_fields[name].annotation))


DATASETS = tuple(d for d in _literal_choices(JobSpec, "dataset") if d != "upload")
SPLIT_METHODS = _literal_choices(SplitSpec, "method")
UPDATE_ENCODINGS = _literal_choices(JobSpec, "update_encoding")
EXECUTORS: tuple[str, ...] = tuple(RUNTIMES)
#: the job every option the demo does not set keeps (its dataset is the demo's default too)
JOB_DEFAULTS = JobSpec(dataset="mnist")


class DemoError(Exception):
    """A failure the demo explains to the user (no traceback)."""


class Terminated(Exception):
    """SIGTERM received: stop like on Ctrl-C."""


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    dataset: str = JOB_DEFAULTS.dataset
    #: one data shard per volunteer
    volunteers: int = JOB_DEFAULTS.shards
    rounds: int = JOB_DEFAULTS.rounds
    split: str = JOB_DEFAULTS.split.method
    merge: str = JOB_DEFAULTS.merge.method
    local_epochs: int = JOB_DEFAULTS.local_epochs
    executor: str = JOB_DEFAULTS.runtimes[0]
    port: int = ServerConfig.port
    state_dir: Path = Path("var/demo")
    runs_dir: Path = DEFAULT_RUNS_DIR
    data_dir: Path | None = None
    seed: int = JOB_DEFAULTS.seed
    timeout_s: float = 3600.0
    startup_timeout_s: float = 120.0
    reuse_state: bool = False
    #: docker units name this image (``sha256:<id>``); None: each client's default image
    worker_image: str | None = None
    #: fault injection for every client (``volunteer_client.testing.faults``), e.g.
    #: "crash:0.3,late:0.1"
    faults: str = ""
    #: "NAME[:FRACTION]": that fraction of the volunteers (default 0.2) attack on every unit
    attack: str = ""
    #: work unit deadline; None: the job default (600 s), or 60 s when faults include
    #: late/vanish
    delay_bound_s: float | None = None
    adaptive: bool = False
    screen_norm_ratio: float | None = None
    #: a fresh trainer process (or container) per unit instead of a warm one
    cold: bool = False
    #: train on a seeded random subset of this many images (JobSpec.train_subset); None: all
    train_subset: int | None = None
    #: how volunteers upload results (JobSpec.update_encoding): fp32, fp16 or int8 deltas
    update_encoding: str = JOB_DEFAULTS.update_encoding


def attack_plan(opts: DemoOptions) -> tuple[str, list[int]]:
    """``(attack name, attacking volunteer indices)``: the last round(fraction x N) volunteers
    (at least one when the fraction is positive)."""
    if not opts.attack.strip():
        return "", []
    name, _, fraction_text = opts.attack.partition(":")
    fraction = float(fraction_text) if fraction_text.strip() else 0.2
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"attack fraction {fraction} not in [0, 1]")
    count = max(1, round(fraction * opts.volunteers)) if fraction > 0 else 0
    return name.strip(), list(range(opts.volunteers - count + 1, opts.volunteers + 1))


def build_job_spec(opts: DemoOptions) -> JobSpec:
    """The job the demo submits: one shard per volunteer, defaults for everything else."""
    return JobSpec.model_validate(
        {
            "dataset": opts.dataset,
            "shards": opts.volunteers,
            "split": {"method": opts.split},
            "merge": {"method": opts.merge, "screen_norm_ratio": opts.screen_norm_ratio},
            "rounds": opts.rounds,
            "local_epochs": opts.local_epochs,
            "seed": opts.seed,
            "runtimes": [opts.executor],
            "replication": replication(opts),
            "train_subset": opts.train_subset,
            "update_encoding": opts.update_encoding,
        }
    )


def replication(opts: DemoOptions) -> dict[str, Any]:
    """Job defaults, except a short deadline for late/vanish faults and, with --adaptive,
    trust after 3 consecutive valid results (the demo's jobs are short)."""
    rep: dict[str, Any] = {}
    if delay_bound(opts) != JOB_DEFAULTS.replication.delay_bound_s:
        rep["delay_bound_s"] = delay_bound(opts)
    if opts.adaptive:
        rep.update(adaptive=True, trust_threshold=3)
    return rep


def delay_bound(opts: DemoOptions) -> float:
    if opts.delay_bound_s is not None:
        return opts.delay_bound_s
    if "late" in opts.faults or "vanish" in opts.faults:
        return 60.0
    return JOB_DEFAULTS.replication.delay_bound_s
