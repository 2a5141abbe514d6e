"""Time to accuracy: the full system against centralised training of the same LeNet (issue #7,
benchmark 4). Target: the system within 1.5x the centralised wall time.

1. **Centralised** (the baseline, measured in the same run): LeNet, Adam lr 0.001, batch 64,
   all 60,000 MNIST training images in this process with ``--threads`` (default: every core),
   until the test accuracy reaches ``--target`` (default 0.99). The clock starts before the
   dataset is loaded.
2. **The system**: a real work server and ``--volunteers`` real client processes
   (``work_server.demo``; process executor, one trainer thread each since
   ``cores / volunteers`` rounds down to 1 on this machine), one job (stratified split,
   ``simple_average``, 1 local epoch, the same recipe and seed), until a round's global model
   reaches the target; then the job is cancelled. The clock starts at job submission (the
   server and clients are already up, as a running project's are); the time to start them
   is reported too.

Both sides evaluate on the 10,000 test images after every 60,000 training samples (an epoch /
a round) and stop at the first evaluation >= target (see ``tta/runs.py``). The system's time
is then split (``tta/timeline.py``) from the timestamps it records, and the costs of a unit
besides training are measured on their own (``tta/runs.py:unit_costs``).

    .venv/bin/python -m bench.time_to_accuracy [--cold] [--compare-cold]

``--cold`` runs the system with a fresh trainer process per unit (the executor before warm
processes); ``--compare-cold`` runs both. Prints tables and writes
``bench/results/time_to_accuracy.json``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import common
from bench.tta.runs import centralized, system, unit_costs
from bench.tta.timeline import PARTS, breakdown
from work_server.demo.options import DemoOptions

TARGET_RATIO = 1.5
IDLE = {"dispatch", "validate_wait"}
LABELS = {
    "dispatch": "round open -> unit handed out (transitioner, client polling)",
    "fetch": "unit handed out -> inputs on disk (download / cache)",
    "process": "executor - trainer: process start + teardown (or warm hand-off)",
    "trainer": "trainer: read inputs, train, write output",
    "upload": "trained -> result on the server",
    "validate_wait": "last result -> round-closer run (transitioner, validator)",
    "aggregate": "merge + evaluate (10,000 test images) + report",
}


def run_system(args: argparse.Namespace, *, cold: bool, console: Console) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="yadml-tta-") as tmp:
        opts = DemoOptions(
            dataset="mnist",
            volunteers=args.volunteers,
            rounds=args.max_rounds,
            split="stratified",
            merge="simple_average",
            local_epochs=1,
            executor="process",
            state_dir=Path(tmp) / "state",
            runs_dir=Path(tmp) / "runs",
            data_dir=Path(os.environ["YADML_DATA_DIR"]) if "YADML_DATA_DIR" in os.environ else None,
            seed=args.seed,
            cold=cold,
            train_subset=args.subset,
        )
        label = "cold" if cold else "warm"

        def on_round(row: dict[str, Any]) -> None:
            console.print(f"  system ({label}) round {row['round']}: acc {row['accuracy']:.4f}")

        run = system(
            opts, target=args.target, max_wall_s=args.max_wall_s, console=console,
            on_round=on_round,
        )  # fmt: skip
        last = run["reached_round"] or len(run["rounds"])
        parts = breakdown(opts.state_dir, run["job_id"], last) if last else None
    marks = run["marks"]
    # the end: the round that reached the target was merged and evaluated (server log)
    end = parts["job_started"] + sum(r["wall_s"] for r in parts["rounds"]) if parts else 0.0
    return {
        "executor": f"process ({label})",
        "reached": run["reached_round"] is not None,
        "rounds_to_target": run["reached_round"],
        "wall_s": end - marks["submit"],
        "startup_s": (parts["job_started"] - marks["submit"]) if parts else None,
        "processes_up_s": marks["clients_up"] - marks["start"],
        "accuracy": [r["accuracy"] for r in run["rounds"]],
        "breakdown": parts,
    }


def headline(cent: dict[str, Any], systems: list[dict[str, Any]], target: float) -> Table:
    table = common.table(
        f"time to {100 * target:.0f}% MNIST test accuracy",
        ["run", "epochs/rounds", "wall s", "vs centralised", f"<= {TARGET_RATIO}x"],
    )
    table.add_row(
        f"centralised ({cent['threads']} threads)",
        str(cent["epochs_to_target"] or f">{len(cent['epochs'])}"),
        f"{cent['wall_s']:.1f}",
        "1.00x",
        "",
    )
    for s in systems:
        ratio = s["wall_s"] / cent["wall_s"]
        ok = s["reached"] and cent["reached"] and ratio <= TARGET_RATIO
        table.add_row(
            f"system, {s['executor']}",
            str(s["rounds_to_target"] or f">{len(s['accuracy'])}"),
            f"{s['wall_s']:.1f}",
            f"{ratio:.2f}x",
            "yes" if ok else "no",
        )
    return table


def parts_table(s: dict[str, Any], costs: dict[str, float]) -> Table:
    totals = s["breakdown"]["totals"]
    n = len(s["breakdown"]["rounds"])
    table = common.table(
        f"where the system's {s['wall_s']:.1f} s went ({s['executor']}, {n} rounds)",
        ["part", "total s", "per round s", "share", "what"],
        left={"what"},
    )
    table.add_row("startup", f"{s['startup_s']:.1f}", "", f"{s['startup_s'] / s['wall_s']:.0%}",
                  "submit -> job started (split, shards, initial weights)")  # fmt: skip
    for part in PARTS:
        v = totals[f"{part}_s"]
        name = f"{part} (idle)" if part in IDLE else part
        table.add_row(name, f"{v:.1f}", f"{v / n:.2f}", f"{v / s['wall_s']:.0%}", LABELS[part])
    per_unit = costs["data_load_s"] + costs["output_write_s"]
    table.add_row("", "", "", "", f"of which data load + output write, measured alone: "
                  f"{per_unit:.2f} s/unit; fresh process alone: "
                  f"{costs['process_start_teardown_s']:.2f} s/unit")  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> int:
    p = common.bench_parser(__doc__, results="time_to_accuracy")
    p.add_argument("--target", type=float, default=0.99)
    p.add_argument("--volunteers", type=int, default=4)
    p.add_argument("--max-epochs", type=int, default=15)
    p.add_argument("--max-rounds", type=int, default=20)
    p.add_argument("--max-wall-s", type=float, default=600.0, help="give the system up after")
    common.add_threads(p, default=os.cpu_count() or 1, help="torch threads of the centralised run")
    common.add_seed(p)
    p.add_argument(
        "--subset", type=int, default=None, help="train on this many images (quick mode)"
    )
    p.add_argument("--cold", action="store_true", help="system with a process per unit")
    p.add_argument("--compare-cold", action="store_true", help="system warm and cold")
    args = p.parse_args(argv)
    console = common.console(min_width=120)
    load_before = os.getloadavg()[0]

    cent = centralized(
        target=args.target, max_epochs=args.max_epochs, threads=args.threads, seed=args.seed,
        subset=args.subset,
        on_epoch=lambda r: console.print(
            f"  centralised epoch {r['epoch']}: acc {r['accuracy']:.4f}  "
            f"train {r['train_s']:.1f} s  eval {r['eval_s']:.1f} s  total {r['wall_s']:.1f} s"
        ),
    )  # fmt: skip
    modes = [False, True] if args.compare_cold else [args.cold]
    systems = [run_system(args, cold=cold, console=console) for cold in modes]
    costs = unit_costs((args.subset or 60000) // args.volunteers)

    console.print(headline(cent, systems, args.target))
    for s in systems:
        if s["breakdown"]:
            console.print(parts_table(s, costs))
        console.print(f"  starting the server and {args.volunteers} clients: "
                      f"{s['processes_up_s']:.1f} s (not on the clock)")  # fmt: skip
    out = {
        "target": args.target,
        "target_ratio": TARGET_RATIO,
        "evaluation": "whole test set after every pass over the training set (epoch / round)",
        "train_samples": args.subset or 60000,
        "centralized": cent,
        "systems": [{**s, "ratio": s["wall_s"] / cent["wall_s"]} for s in systems],
        "unit_costs_alone": costs,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_1min_before": load_before,
            "loadavg_1min_after": os.getloadavg()[0],
        },
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    common.write_results(args.output, out, out=console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
