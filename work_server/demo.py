"""One-command local demo: a work server, N volunteer clients, one training job.

``python -m work_server.demo [--dataset mnist] [--volunteers 4] [--rounds 5] ...`` starts the
server and the clients as separate processes (exactly as an operator and volunteers would),
submits a job through the operator API, shows its progress, prints the per-round metrics and
stops every process it started. It talks to them only through their CLIs and the HTTP API;
the only project import is :mod:`yadml_common.wire` for the JSON models.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, get_args

import httpx
import pydantic
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from yadml_common.wire import (
    API_PREFIX,
    RUNTIMES,
    JobSpec,
    JobStatus,
    MergeSpec,
    RoundMetrics,
    ServerStatus,
    SplitSpec,
)

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
MERGE_METHODS = _literal_choices(MergeSpec, "method")
EXECUTORS: tuple[str, ...] = tuple(RUNTIMES)


class DemoError(Exception):
    """A failure the demo explains to the user (no traceback)."""


class Terminated(Exception):
    """SIGTERM received: stop like on Ctrl-C."""


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    dataset: str = "mnist"
    volunteers: int = 4
    rounds: int = 5
    split: str = "stratified"
    merge: str = "simple_average"
    local_epochs: int = 1
    executor: str = "process"
    port: int = 8080
    state_dir: Path = Path("var/demo")
    runs_dir: Path = Path("runs")
    data_dir: Path | None = None
    seed: int = 0
    timeout_s: float = 3600.0
    startup_timeout_s: float = 120.0
    reuse_state: bool = False
    #: docker units name this image (``sha256:<id>``); None: each client's default image
    worker_image: str | None = None
    #: fault injection for every client (``volunteer_client.faults``), e.g. "crash:0.3,late:0.1"
    faults: str = ""
    #: "NAME[:FRACTION]": that fraction of the volunteers (default 0.2) attack on every unit
    attack: str = ""
    #: work unit deadline; None: 600 s, or 60 s when faults include late/vanish
    delay_bound_s: float | None = None
    adaptive: bool = False
    screen_norm_ratio: float | None = None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    d = DemoOptions()
    p = argparse.ArgumentParser(
        prog="python -m work_server.demo",
        description="Start a YADML work server and volunteer clients locally, train one job "
        "end to end and print its metrics.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", choices=DATASETS, default=d.dataset, help="training data")
    p.add_argument(
        "--volunteers",
        type=_positive_int,
        default=d.volunteers,
        help="volunteer client processes; also the number of data shards",
    )
    p.add_argument("--rounds", type=_positive_int, default=d.rounds, help="federated rounds")
    p.add_argument("--split", choices=SPLIT_METHODS, default=d.split, help="how data is sharded")
    p.add_argument("--merge", choices=MERGE_METHODS, default=d.merge, help="merge policy")
    p.add_argument(
        "--local-epochs", type=_positive_int, default=d.local_epochs, help="epochs per work unit"
    )
    p.add_argument("--executor", choices=EXECUTORS, default=d.executor, help="client runtime")
    p.add_argument(
        "--port", type=_port, default=d.port, help="server port (a free one is used if busy)"
    )
    p.add_argument(
        "--state-dir", type=Path, default=d.state_dir, help="server DB/blobs, clients, logs"
    )
    p.add_argument("--runs-dir", type=Path, default=d.runs_dir, help="reports: RUNS_DIR/<job id>/")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=d.data_dir,
        help="MNIST IDX directory for the server (None: the server's default)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="job seed (split, init, training)")
    p.add_argument(
        "--timeout",
        dest="timeout_s",
        type=_positive_float,
        default=d.timeout_s,
        help="give up if the job is not finished after this many seconds",
    )
    p.add_argument(
        "--startup-timeout",
        dest="startup_timeout_s",
        type=_positive_float,
        default=d.startup_timeout_s,
        help="seconds to wait for the server's /healthz",
    )
    p.add_argument(
        "--worker-image",
        default=d.worker_image,
        metavar="DIGEST",
        help="worker image for --executor docker, by digest (sha256:<id>; `make demo` passes it)",
    )
    p.add_argument(
        "--reuse-state",
        action="store_true",
        help="keep the state dir of a previous run instead of starting from an empty one",
    )
    p.add_argument(
        "--faults",
        default=d.faults,
        help="inject faults in every client, e.g. crash:0.3,late:0.1,vanish:0.05,garbage:0.05",
    )
    p.add_argument(
        "--attack",
        default=d.attack,
        help="NAME[:FRACTION]: that fraction of the volunteers (default 0.2) attack every unit; "
        "signflip, noise, scale, labelflip or alie",
    )
    p.add_argument(
        "--delay-bound",
        dest="delay_bound_s",
        type=_positive_float,
        default=d.delay_bound_s,
        help="work unit deadline in seconds (default 600, or 60 with late/vanish faults)",
    )
    p.add_argument(
        "--adaptive", action="store_true", help="adaptive replication (host trust, spot checks)"
    )
    p.add_argument(
        "--screen-norm-ratio",
        type=_positive_float,
        default=d.screen_norm_ratio,
        help="screen out updates whose norm exceeds this times the round's median",
    )
    return p


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


def parse_args(argv: Sequence[str] | None = None) -> DemoOptions:
    parser = build_parser()
    ns = parser.parse_args(argv)
    opts = DemoOptions(
        dataset=ns.dataset,
        volunteers=ns.volunteers,
        rounds=ns.rounds,
        split=ns.split,
        merge=ns.merge,
        local_epochs=ns.local_epochs,
        executor=ns.executor,
        port=ns.port,
        state_dir=ns.state_dir,
        runs_dir=ns.runs_dir,
        data_dir=ns.data_dir,
        seed=ns.seed,
        timeout_s=ns.timeout_s,
        startup_timeout_s=ns.startup_timeout_s,
        reuse_state=ns.reuse_state,
        worker_image=ns.worker_image,
        faults=ns.faults,
        attack=ns.attack,
        delay_bound_s=ns.delay_bound_s,
        adaptive=ns.adaptive,
        screen_norm_ratio=ns.screen_norm_ratio,
    )
    try:
        build_job_spec(opts)
        attack_plan(opts)
    except pydantic.ValidationError as exc:
        parser.error(f"invalid job: {exc}")
    except ValueError as exc:
        parser.error(f"invalid --attack: {exc}")
    return opts


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
        }
    )


def replication(opts: DemoOptions) -> dict[str, Any]:
    """Wire defaults, except a short deadline for late/vanish faults and, with --adaptive,
    trust after 3 consecutive valid results (the demo's jobs are short)."""
    rep: dict[str, Any] = {}
    if delay_bound(opts) != 600.0:
        rep["delay_bound_s"] = delay_bound(opts)
    if opts.adaptive:
        rep.update(adaptive=True, trust_threshold=3)
    return rep


def delay_bound(opts: DemoOptions) -> float:
    if opts.delay_bound_s is not None:
        return opts.delay_bound_s
    return 60.0 if ("late" in opts.faults or "vanish" in opts.faults) else 600.0


# --------------------------------------------------------------------------- commands


def server_command(opts: DemoOptions, port: int) -> list[str]:
    cmd = [
        sys.executable, "-m", "work_server", "serve",
        "--host", HOST,
        "--port", str(port),
        "--state-dir", str(opts.state_dir),
        "--runs-dir", str(opts.runs_dir),
        "--interval-transitioner", DAEMON_INTERVAL_S,
        "--interval-validator", DAEMON_INTERVAL_S,
        "--interval-aggregator", DAEMON_INTERVAL_S,
        "--retry-after", DAEMON_INTERVAL_S,
    ]  # fmt: skip
    if opts.data_dir is not None:
        cmd += ["--data-dir", str(opts.data_dir)]
    if opts.worker_image is not None and opts.executor == "docker":
        cmd += ["--worker-image", opts.worker_image]
    return cmd


def client_state_dir(opts: DemoOptions, index: int) -> Path:
    return opts.state_dir / "clients" / str(index)


def client_attach_command(opts: DemoOptions, index: int, url: str) -> list[str]:
    return [
        sys.executable, "-m", "volunteer_client",
        "--state-dir", str(client_state_dir(opts, index)),
        "attach", url,
        "--name", f"volunteer-{index}",
        "--runtimes", opts.executor,
    ]  # fmt: skip


def client_run_command(opts: DemoOptions, index: int) -> list[str]:
    cmd = [
        sys.executable, "-m", "volunteer_client",
        "--state-dir", str(client_state_dir(opts, index)),
        "run",
        "--executor", opts.executor,
        "--threads", "1",
    ]  # fmt: skip
    # fault injection and attackers: testing and demos only
    if opts.faults.strip():
        cmd += ["--faults", opts.faults, "--fault-seed", str(opts.seed * 1000 + index)]
    name, attackers = attack_plan(opts)
    if index in attackers:
        cmd += ["--attack", name]
    return cmd


def child_env(*, operator_token: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("YADML_OPERATOR_TOKEN", None)
    env["PYTHONUNBUFFERED"] = "1"
    if operator_token is not None:
        env["YADML_OPERATOR_TOKEN"] = operator_token
    return env


# --------------------------------------------------------------------------- ports, dirs


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # aiohttp binds with SO_REUSEADDR: a port in TIME_WAIT is usable, a listening one is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def pick_port(preferred: int, host: str = HOST) -> tuple[int, bool]:
    """``(port, moved)``: the preferred port if it is free, else an OS-chosen free one."""
    if preferred != 0 and port_is_free(preferred, host):
        return preferred, False
    return free_port(host), preferred != 0


def prepare_state_dir(path: Path, *, reuse: bool) -> None:
    """Create the demo's state dir; wipe a previous demo's one unless ``reuse``.

    A non-empty directory without the demo's marker file is never deleted.
    """
    if path.exists() and not reuse and any(path.iterdir()):
        if not (path / STATE_MARKER).is_file():
            raise DemoError(
                f"{path} is not empty and was not created by the demo; "
                "choose another --state-dir or pass --reuse-state"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / STATE_MARKER).write_text("state directory of `python -m work_server.demo`\n")


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"({path} is empty)"


# --------------------------------------------------------------------------- processes


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_child(name: str, cmd: Sequence[str], log_path: Path, env: Mapping[str, str]) -> Child:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n### {time.strftime('%Y-%m-%d %H:%M:%S')} $ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            # Own process group: Ctrl-C reaches only the demo, which stops children in order.
            start_new_session=True,
        )
    return Child(name=name, proc=proc, log_path=log_path)


def _kill_group(child: Child) -> None:
    try:
        os.killpg(child.proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        child.proc.kill()


def stop_children(children: Sequence[Child], *, timeout_s: float = 10.0) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL the whole process group."""
    for child in children:
        if child.alive():
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    try:
        for child in children:
            remaining = max(0.0, deadline - time.monotonic())
            with suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=remaining)
    except (KeyboardInterrupt, Terminated):
        pass  # a second Ctrl-C or SIGTERM: do not wait any longer
    for child in children:
        if child.alive():
            _kill_group(child)
            child.proc.wait()


@dataclass
class Demo:
    """The processes the demo started; :meth:`stop` ends them all."""

    opts: DemoOptions
    console: Console
    server: Child | None = None
    #: ``attach`` processes while they run, then the ``run`` daemons.
    clients: list[Child] = field(default_factory=list)

    def stop(self) -> None:
        if self.server is None and not self.clients:
            return
        self.console.print("[dim]stopping volunteer clients and server ...[/]")
        stop_children(self.clients)  # first, so they can still talk to the server
        self.clients = []
        if self.server is not None:
            stop_children([self.server])
            self.server = None

    def start_server(self, port: int, token: str) -> Child:
        self.server = start_child(
            "server",
            server_command(self.opts, port),
            self.opts.state_dir / "server.log",
            child_env(operator_token=token),
        )
        return self.server

    def check_server(self) -> None:
        server = self.server
        if server is not None and not server.alive():
            raise DemoError(
                f"the server exited with code {server.proc.returncode}; "
                f"last lines of {server.log_path}:\n{log_tail(server.log_path)}"
            )

    def wait_healthy(self, url: str) -> None:
        deadline = time.monotonic() + self.opts.startup_timeout_s
        with httpx.Client(timeout=2.0) as http:
            while True:
                self.check_server()
                try:
                    if http.get(f"{url}/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    log = self.opts.state_dir / "server.log"
                    raise DemoError(
                        f"the server did not answer GET {url}/healthz within "
                        f"{self.opts.startup_timeout_s:.0f} s; last lines of {log}:\n"
                        f"{log_tail(log)}"
                    )
                time.sleep(0.2)

    def start_clients(self, url: str) -> None:
        """Attach every volunteer (in parallel), then start their ``run`` daemons."""
        env = child_env()
        indices = range(1, self.opts.volunteers + 1)
        self.clients = [
            start_child(
                f"volunteer-{i} attach",
                client_attach_command(self.opts, i, url),
                client_state_dir(self.opts, i) / "client.log",
                env,
            )
            for i in indices
        ]
        deadline = time.monotonic() + self.opts.startup_timeout_s
        for child in self.clients:
            try:
                rc = child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise DemoError(
                    f"{child.name} did not finish within {self.opts.startup_timeout_s:.0f} s; "
                    f"last lines of {child.log_path}:\n{log_tail(child.log_path)}"
                ) from None
            if rc != 0:
                raise DemoError(
                    f"{child.name} failed with exit code {rc}; "
                    f"last lines of {child.log_path}:\n{log_tail(child.log_path)}"
                )
        self.clients = [
            start_child(
                f"volunteer-{i}",
                client_run_command(self.opts, i),
                client_state_dir(self.opts, i) / "client.log",
                env,
            )
            for i in indices
        ]


# --------------------------------------------------------------------------- API


def submit_job(http: httpx.Client, spec: JobSpec) -> int:
    resp = http.post(f"{API_PREFIX}/jobs", json=spec.model_dump(mode="json"))
    if resp.status_code >= 400:
        raise DemoError(f"POST {API_PREFIX}/jobs: HTTP {resp.status_code}: {resp.text}")
    body: Any = resp.json()
    try:
        return int(body["id"])
    except (TypeError, KeyError, ValueError):
        raise DemoError(f"POST {API_PREFIX}/jobs answered without a job id: {body!r}") from None


def get_job(http: httpx.Client, job_id: int) -> JobStatus:
    resp = http.get(f"{API_PREFIX}/jobs/{job_id}")
    if resp.status_code >= 400:
        raise DemoError(f"GET {API_PREFIX}/jobs/{job_id}: HTTP {resp.status_code}: {resp.text}")
    return JobStatus.model_validate_json(resp.content)


def get_server_status(http: httpx.Client) -> ServerStatus | None:
    """Only for the progress display: ``None`` on any problem."""
    try:
        resp = http.get(f"{API_PREFIX}/status")
        if resp.status_code != 200:
            return None
        return ServerStatus.model_validate_json(resp.content)
    except (httpx.HTTPError, pydantic.ValidationError):
        return None


# --------------------------------------------------------------------------- output


def format_round(m: RoundMetrics, rounds: int) -> str:
    return (
        f"round {m.round}/{rounds}: accuracy {m.accuracy:.4f}, loss {m.loss:.4f}, "
        f"F1 {m.f1_macro:.4f}, results ok/err/no-reply "
        f"{m.results_success}/{m.results_error}/{m.results_no_reply}, {m.duration_s:.1f} s"
    )


FULL_HEADERS = (
    "round", "accuracy", "loss", "precision", "recall", "F1", "ROC AUC", "AP",
    "results ok/err/no-reply", "seconds",
)  # fmt: skip
COMPACT_HEADERS = (
    "round", "acc", "loss", "prec", "recall", "F1", "ROC AUC", "AP", "ok/err/nr", "s",
)  # fmt: skip


def metrics_table(rounds: Sequence[RoundMetrics], *, compact: bool = False) -> Table:
    """Per-round metrics; ``compact`` abbreviates the headers to fit 80 columns."""
    table = Table(
        title="per-round metrics (test set)",
        box=box.SIMPLE_HEAVY,
        padding=(0, 0, 0, 1),
        show_edge=False,
        pad_edge=False,
    )
    for name in COMPACT_HEADERS if compact else FULL_HEADERS:
        table.add_column(name, justify="right", no_wrap=True)
    for m in rounds:
        table.add_row(
            str(m.round),
            f"{m.accuracy:.4f}",
            f"{m.loss:.4f}",
            f"{m.precision_macro:.4f}",
            f"{m.recall_macro:.4f}",
            f"{m.f1_macro:.4f}",
            f"{m.roc_auc_macro:.4f}",
            f"{m.average_precision_macro:.4f}",
            f"{m.results_success}/{m.results_error}/{m.results_no_reply}",
            f"{m.duration_s:.1f}",
        )
    return table


def trust_table(status: ServerStatus, attackers: Sequence[int]) -> Table:
    """Per-host trust at the end (host names are ``volunteer-<index>``)."""
    table = Table(title="host trust (adaptive replication, quota)", box=box.SIMPLE_HEAVY)
    for name in ("host", "role", "valid", "invalid", "error", "consecutive", "quota", "trusted"):
        table.add_column(name, justify="right", no_wrap=True)
    roles = {f"volunteer-{i}" for i in attackers}
    for h in status.host_trust:
        table.add_row(
            h.name,
            "[red]attacker[/]" if h.name in roles else "honest",
            str(h.valid),
            str(h.invalid),
            str(h.error),
            str(h.consecutive_valid),
            str(h.daily_quota),
            "yes" if h.trusted else "no",
        )
    return table


def report_dir(job: JobStatus, runs_dir: Path) -> Path:
    if job.report_path:
        path = Path(job.report_path)
        return path.parent if path.suffix == ".json" else path
    return runs_dir / str(job.id)


# --------------------------------------------------------------------------- main flow


def follow_job(demo: Demo, http: httpx.Client, job_id: int, spec: JobSpec) -> JobStatus:
    """Poll the job until it is final, showing a live progress bar."""
    console = demo.console
    deadline = time.monotonic() + demo.opts.timeout_s
    errors = 0
    seen_rounds = 0
    warned_dead: set[str] = set()
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[state]:<9}"),
        BarColumn(),
        TextColumn("round {task.fields[round]}/{task.total:.0f}"),
        TextColumn("acc {task.fields[acc]}"),
        TextColumn("results in {task.fields[in_progress]} / over {task.fields[over]}"),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        task = progress.add_task(
            f"job {job_id}", total=spec.rounds, state="pending", round=0, acc="-",
            in_progress="-", over="-",
        )  # fmt: skip
        while True:
            demo.check_server()
            for client in demo.clients:
                if not client.alive() and client.name not in warned_dead:
                    warned_dead.add(client.name)
                    progress.console.print(
                        f"[yellow]{client.name} exited with code {client.proc.returncode}; "
                        f"see {client.log_path}[/]"
                    )
            if demo.clients and not any(c.alive() for c in demo.clients):
                raise DemoError("every volunteer client has exited; see their client.log files")
            try:
                job = get_job(http, job_id)
                errors = 0
            except httpx.TransportError as exc:
                errors += 1
                if errors >= 20:
                    raise DemoError(f"lost contact with the server: {exc}") from exc
                time.sleep(POLL_INTERVAL_S)
                continue
            for m in job.rounds[seen_rounds:]:
                progress.console.print(format_round(m, spec.rounds))
            seen_rounds = max(seen_rounds, len(job.rounds))
            status = get_server_status(http)
            progress.update(
                task,
                completed=len(job.rounds),
                state=job.state,
                round=job.current_round,
                acc=f"{job.rounds[-1].accuracy:.4f}" if job.rounds else "-",
                in_progress=str(status.results_in_progress) if status else "?",
                over=str(sum(status.results_over.values())) if status else "?",
            )
            if job.state in FINAL_STATES:
                return job
            if time.monotonic() > deadline:
                raise DemoError(
                    f"job {job_id} is still {job.state} after {demo.opts.timeout_s:.0f} s "
                    "(--timeout); giving up"
                )
            time.sleep(POLL_INTERVAL_S)


def run_demo(opts: DemoOptions, console: Console) -> int:
    started = time.monotonic()
    opts = dataclasses.replace(
        opts,
        state_dir=opts.state_dir.resolve(),
        runs_dir=opts.runs_dir.resolve(),
        data_dir=opts.data_dir.resolve() if opts.data_dir else None,
    )
    spec = build_job_spec(opts)
    prepare_state_dir(opts.state_dir, reuse=opts.reuse_state)
    opts.runs_dir.mkdir(parents=True, exist_ok=True)

    port, moved = pick_port(opts.port)
    if moved:
        console.print(f"[yellow]port {opts.port} is busy; using free port {port} instead[/]")
    url = f"http://{HOST}:{port}"
    token = secrets.token_urlsafe(32)
    console.print(f"operator token: [bold]{token}[/] (env YADML_OPERATOR_TOKEN of the server)")

    demo = Demo(opts=opts, console=console)
    try:
        server = demo.start_server(port, token)
        console.print(f"started the work server at {url} (log: {server.log_path})")
        demo.wait_healthy(url)
        console.print(
            f"server is up; attaching {opts.volunteers} volunteer client(s) "
            f"(logs: {opts.state_dir / 'clients'}/<i>/client.log) ..."
        )
        demo.start_clients(url)

        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=10.0) as http:
            job_id = submit_job(http, spec)
            submitted = time.monotonic()
            console.print(
                f"submitted job {job_id}: {spec.dataset}, {spec.shards} shards "
                f"({spec.split.method}), merge {spec.merge.method}, {spec.rounds} round(s), "
                f"{spec.local_epochs} local epoch(s), runtime {opts.executor}"
            )
            job = follow_job(demo, http, job_id, spec)
            job_wall = time.monotonic() - submitted
            final_status = get_server_status(http)
    finally:
        demo.stop()

    if job.rounds:
        console.print(metrics_table(job.rounds, compact=console.width < 110))
    console.print(f"job {job.id}: [bold]{job.state}[/]")
    if job.error:
        console.print(f"[red]error: {escape(job.error)}[/]")
    if job.rounds:
        console.print(f"final accuracy: [bold]{job.rounds[-1].accuracy:.4f}[/]")
    console.print(
        f"wall time: {job_wall:.1f} s for the job, {time.monotonic() - started:.1f} s in all"
    )
    if final_status is not None and (opts.faults or opts.attack or opts.adaptive):
        console.print(trust_table(final_status, attack_plan(opts)[1]))
    rdir = report_dir(job, opts.runs_dir)
    for name in ("report.json", "accuracy.png", "confusion.png"):
        path = rdir / name
        console.print(f"  {path}" + ("" if path.exists() else "  [yellow](missing)[/]"))
    console.print(f"operator token was: {token}")
    return 0 if job.state == "completed" else 1


@contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=120)  # logs and pipes: do not wrap at 80 columns
    try:
        with _sigterm_as_exception():
            return run_demo(opts, console)
    except DemoError as exc:
        console.print(f"[red]demo failed:[/] {escape(str(exc))}", highlight=False)
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130
    except Terminated:
        console.print("[yellow]terminated[/]")
        return 143


if __name__ == "__main__":
    raise SystemExit(main())
