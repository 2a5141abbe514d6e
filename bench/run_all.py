"""Run every benchmark of the suite in its default (bounded) mode: ``make bench``.

Each benchmark is its own script that prints its table and writes JSON under
``bench/results/``; this runner runs them one after another (never in parallel: they measure
the machine), shows progress, then prints one summary of the headline figures against the
targets and writes ``bench/results/summary.json``.

    .venv/bin/python bench/run_all.py [--only dispatch,aggregation] [--skip vm]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "bench"))

from summary import HEADLINES  # noqa: E402  (bench/ is not a package)


@dataclass(frozen=True)
class Bench:
    name: str
    argv: list[str]
    results: str  # its JSON under bench/results/
    needs: str = ""  # a component the benchmark needs (for the skip message)


def suite(py: str) -> list[Bench]:
    b = str(ROOT / "bench")
    return [
        Bench("dispatch", [py, f"{b}/dispatch_throughput.py"], "dispatch_throughput"),
        Bench("upload", [py, f"{b}/upload_throughput.py"], "upload_throughput"),
        Bench("aggregation", [py, f"{b}/aggregation.py"], "aggregation"),
        Bench("update_size", [py, f"{b}/update_size.py"], "update_size"),
        Bench(
            "executor_overhead",
            [py, f"{b}/executor_overhead.py"],
            "executor_overhead",
            "a Docker engine with the worker image, QEMU with the VM image",
        ),
        Bench("time_to_accuracy", [py, f"{b}/time_to_accuracy.py"], "time_to_accuracy"),
        Bench("scale_sim", [py, f"{b}/scale_sim.py"], "scale_sim"),
        Bench(
            "dispatch_scaling",
            [py, f"{b}/dispatch_scaling.py"],
            "dispatch_scaling",
            "a PostgreSQL server (make postgres)",
        ),
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--only", default="", help="comma-separated benchmark names")
    p.add_argument("--skip", default="", help="comma-separated benchmark names")
    p.add_argument(
        "--summary-only",
        action="store_true",
        help="run nothing: rebuild the summary from the JSON files (after re-running one script)",
    )
    args = p.parse_args()

    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120))
    only = {n for n in args.only.split(",") if n}
    skip = {n for n in args.skip.split(",") if n}
    chosen = [
        b for b in suite(sys.executable) if (not only or b.name in only) and b.name not in skip
    ]
    runs: dict[str, dict[str, Any]] = {}
    start = time.monotonic()
    previous = RESULTS / "summary.json"
    if args.summary_only and previous.is_file():
        runs = json.loads(previous.read_text())["runs"]
    for i, bench in enumerate([] if args.summary_only else chosen, 1):
        console.rule(f"[bold]{i}/{len(chosen)} {bench.name}[/] ({' '.join(bench.argv[1:])})")
        t0 = time.monotonic()
        # wide enough for every table when the output goes to a log rather than a terminal
        env = {**os.environ, "COLUMNS": os.environ.get("COLUMNS", "160")}
        rc = subprocess.run(bench.argv, cwd=ROOT, env=env, check=False).returncode
        runs[bench.name] = {
            "rc": rc,
            "wall_s": round(time.monotonic() - t0, 1),
            "results": bench.results,
        }
        if rc != 0:
            console.print(f"[red]{bench.name} failed (exit {rc})[/] {bench.needs}")
    total = time.monotonic() - start
    if args.summary_only:
        total = sum(r["wall_s"] for r in runs.values())

    table = Table(title=f"YADML benchmarks: {os.cpu_count()} cores, {platform.machine()}")
    for c in ("benchmark", "figure", "value", "target", "met", "run s"):
        table.add_column(c, justify="left" if c in ("benchmark", "figure", "target") else "right")
    summary: list[dict[str, Any]] = []
    for name, run in runs.items():
        rows = _headlines(run["results"], HEADLINES.get(name))
        for j, (figure, value, target, met) in enumerate(rows or [("(no figures)", "", "", None)]):
            mark = "" if met is None else ("yes" if met else "[red]no[/]")
            table.add_row(
                name if j == 0 else "",
                figure,
                value,
                target,
                mark,
                f"{run['wall_s']:.0f}" if j == 0 else "",
            )
            summary.append(
                {"benchmark": name, "figure": figure, "value": value, "target": target, "met": met}
            )
    console.print(table)
    console.print(f"total {total / 60:.1f} min")
    (RESULTS / "summary.json").write_text(
        json.dumps(
            {
                "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
                "total_s": round(total, 1),
                "runs": runs,
                "figures": summary,
            },
            indent=2,
        )
    )
    return 0 if all(r["rc"] == 0 for r in runs.values()) else 1


def _headlines(
    name: str, extract: Callable[[dict[str, Any]], list[tuple[str, str, str, bool | None]]] | None
) -> list[tuple[str, str, str, bool | None]]:
    path = RESULTS / f"{name}.json"
    if extract is None or not path.is_file():
        return []
    try:
        return extract(json.loads(path.read_text()))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        return [("(unreadable results)", repr(exc)[:60], "", None)]


if __name__ == "__main__":
    raise SystemExit(main())
