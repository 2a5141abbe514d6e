"""A job's run report: ``report.json`` plus two plots, written into the job's run directory.

``report`` is the JSON-able dict described in ``docs/architecture.md``::

    {job_id, dataset, model, config, rounds: [RoundMetrics...], final: {...metrics},
     confusion_matrix, wall_s}

* ``report.json``: the dict itself (indented).
* ``accuracy.png``: test accuracy (left axis) and test loss (right axis) per round.
* ``confusion.png``: the final confusion matrix as a heat map with counts.

Plots use matplotlib's object-oriented API on an Agg canvas (no pyplot global state). Every
file is written to a temporary name in the same directory and renamed into place, so a
reader never sees a half-written file. Missing rounds or confusion matrix give a plot that
says so rather than an error.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from yadml_common.fsutil import atomic_write

__all__ = ["write_report"]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _title(report: dict[str, Any]) -> str:
    parts = [str(report.get("dataset", "?")), str(report.get("model", "?"))]
    if report.get("job_id") is not None:
        parts.insert(0, f"job {report['job_id']}")
    return " / ".join(parts)


def _accuracy_figure(report: dict[str, Any]) -> Figure:
    rounds: Sequence[dict[str, Any]] = report.get("rounds") or []
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    ax.set_title(f"Test accuracy and loss per round ({_title(report)})")
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy", color="tab:blue")
    if not rounds:
        ax.text(0.5, 0.5, "no rounds completed", ha="center", va="center", transform=ax.transAxes)
    else:
        xs = [int(r["round"]) for r in rounds]
        acc = [float(r["accuracy"]) for r in rounds]
        loss = [float(r["loss"]) for r in rounds]
        (l1,) = ax.plot(xs, acc, "o-", color="tab:blue", label="accuracy")
        ax.tick_params(axis="y", labelcolor="tab:blue")
        ax.set_xticks(xs if len(xs) <= 20 else xs[:: max(1, len(xs) // 20)])
        ax.grid(True, alpha=0.3)
        ax2 = ax.twinx()
        (l2,) = ax2.plot(xs, loss, "s--", color="tab:red", label="loss")
        ax2.set_ylabel("loss (mean NLL)", color="tab:red")
        ax2.tick_params(axis="y", labelcolor="tab:red")
        ax.legend(handles=[l1, l2], loc="center right")
        ax.annotate(f"{acc[-1]:.4f}", (xs[-1], acc[-1]), textcoords="offset points", xytext=(0, 8))
    fig.tight_layout()
    return fig


def _confusion_figure(report: dict[str, Any]) -> Figure:
    matrix: Sequence[Sequence[int]] | None = report.get("confusion_matrix")
    fig = Figure(figsize=(6.5, 6))
    ax = fig.add_subplot()
    ax.set_title(f"Confusion matrix ({_title(report)})")
    if not matrix:
        ax.text(0.5, 0.5, "no confusion matrix", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    n = len(matrix)
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    peak = max((max(row) for row in matrix if row), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            color = "white" if peak and count > peak / 2 else "black"
            ax.text(j, i, str(count), ha="center", va="center", color=color, fontsize=7)
    ax.set_xticks(range(n), [str(i) for i in range(n)])
    ax.set_yticks(range(n), [str(i) for i in range(n)])
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    fig.tight_layout()
    return fig


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    """Write ``report.json``, ``accuracy.png`` and ``confusion.png`` into ``run_dir``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, sort_keys=False, default=str)
    atomic_write(run_dir / "report.json", text.encode() + b"\n")
    atomic_write(run_dir / "accuracy.png", _png(_accuracy_figure(report)))
    atomic_write(run_dir / "confusion.png", _png(_confusion_figure(report)))
