"""The demo's command line and main flow: parse options, start the processes, submit the
job, follow it to the end and print the results (see the package docstring)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import httpx
import pydantic
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from work_server.demo.api import get_hosts, get_job, get_server_status, submit_job
from work_server.demo.display import format_round, metrics_table, report_dir, trust_table
from work_server.demo.options import (
    DATASETS,
    EXECUTORS,
    FINAL_STATES,
    HOST,
    JOB_DEFAULTS,
    MERGE_METHODS,
    POLL_INTERVAL_S,
    SPLIT_METHODS,
    UPDATE_ENCODINGS,
    DemoError,
    DemoOptions,
    Terminated,
    attack_plan,
    build_job_spec,
)
from work_server.demo.processes import Demo, pick_port, prepare_state_dir
from work_server.job_spec import JobSpec
from work_server.job_status import JobStatus


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
        help=f"work unit deadline in seconds (default {JOB_DEFAULTS.replication.delay_bound_s:g}, "
        "or 60 with late/vanish faults)",
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
    p.add_argument(
        "--update-encoding",
        choices=UPDATE_ENCODINGS,
        default=d.update_encoding,
        help="upload results as fp32 weights, or fp16 / int8 deltas (2x / 4x smaller)",
    )
    return p


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
        update_encoding=ns.update_encoding,
    )
    try:
        build_job_spec(opts)
        attack_plan(opts)
    except pydantic.ValidationError as exc:
        parser.error(f"invalid job: {exc}")
    except ValueError as exc:
        parser.error(f"invalid --attack: {exc}")
    return opts


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
            final_hosts = get_hosts(http)
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
    if final_hosts is not None and (opts.faults or opts.attack or opts.adaptive):
        console.print(trust_table(final_hosts, attack_plan(opts)[1]))
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
