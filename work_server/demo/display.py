"""Rich output: per-round lines, the metrics and host trust tables, the report directory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich import box
from rich.table import Table

from work_server.host_status import HostList
from work_server.job_status import JobStatus, RoundMetrics


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


def trust_table(hosts: HostList, attackers: Sequence[int]) -> Table:
    """Per-host, per-runtime trust at the end, from the operator's ``GET /api/v1/hosts`` (the
    demo names its hosts ``volunteer-<index>``; names are private, not in the public status)."""
    table = Table(title="host trust (adaptive replication, quota)", box=box.SIMPLE_HEAVY)
    for name in ("host", "role", "valid", "invalid", "error", "consecutive", "quota", "trusted"):
        table.add_column(name, justify="right", no_wrap=True)
    roles = {f"volunteer-{i}" for i in attackers}
    for host in hosts.hosts:
        for t in host.trust:
            table.add_row(
                host.name,
                "[red]attacker[/]" if host.name in roles else "honest",
                str(t.valid),
                str(t.invalid),
                str(t.error),
                str(t.consecutive_valid),
                str(t.daily_quota),
                "yes" if t.trusted else "no",
            )
    return table


def report_dir(job: JobStatus, runs_dir: Path) -> Path:
    if job.report_path:
        path = Path(job.report_path)
        return path.parent if path.suffix == ".json" else path
    return runs_dir / str(job.id)
