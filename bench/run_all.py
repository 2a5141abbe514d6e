"""Run every benchmark of the suite in its default (bounded) mode: ``make bench``.

Each benchmark is its own module (``python -m bench.<name>``) that prints its table and
writes JSON under ``bench/results/``; this runner runs them one after another (never in
parallel: they measure the machine), shows progress, then prints one summary of the headline
figures against the targets and writes ``bench/results/summary.json``.

    .venv/bin/python -m bench.run_all [--only dispatch,aggregation] [--skip vm]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import common
from bench.summary import HEADLINES


@dataclass(frozen=True)
class Bench:
    name: str
    module: str  # bench.<module>, whose JSON is bench/results/<module>.json
    needs: str = ""  # a component the benchmark needs (for the skip message)

    @property
    def argv(self) -> list[str]:
        return common.module_command(f"bench.{self.module}")


SUITE = (
    Bench("dispatch", "dispatch_throughput"),
    Bench("upload", "upload_throughput"),
    Bench("aggregation", "aggregation"),
    Bench("update_size", "update_size"),
    Bench(
        "executor_overhead",
        "executor_overhead",
        "a Docker engine with the worker image, QEMU with the VM image",
    ),
    Bench("time_to_accuracy", "time_to_accuracy"),
    Bench("scale_sim", "scale_sim"),
    Bench("dispatch_scaling", "dispatch_scaling", "a PostgreSQL server (make postgres)"),
)


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

    console = common.console(min_width=120)
    only = {n for n in args.only.split(",") if n}
    skip = {n for n in args.skip.split(",") if n}
    chosen = [b for b in SUITE if (not only or b.name in only) and b.name not in skip]
    runs: dict[str, dict[str, Any]] = {}
    start = time.monotonic()
    previous = common.results_path("summary")
    if args.summary_only and previous.is_file():
        runs = json.loads(previous.read_text())["runs"]
    for i, bench in enumerate([] if args.summary_only else chosen, 1):
        console.rule(f"[bold]{i}/{len(chosen)} {bench.name}[/] ({' '.join(bench.argv[1:])})")
        t0 = time.monotonic()
        # wide enough for every table when the output goes to a log rather than a terminal
        env = {**os.environ, "COLUMNS": os.environ.get("COLUMNS", "160")}
        rc = subprocess.run(bench.argv, cwd=common.ROOT, env=env, check=False).returncode
        runs[bench.name] = {
            "rc": rc,
            "wall_s": round(time.monotonic() - t0, 1),
            "results": bench.module,
        }
        if rc != 0:
            console.print(f"[red]{bench.name} failed (exit {rc})[/] {bench.needs}")
    total = time.monotonic() - start
    if args.summary_only:
        total = sum(r["wall_s"] for r in runs.values())

    table = common.table(
        f"YADML benchmarks: {os.cpu_count()} cores, {platform.machine()}",
        ["benchmark", "figure", "value", "target", "met", "run s"],
        left={"benchmark", "figure", "target"},
    )
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
    common.write_results(
        previous,
        {
            "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
            "total_s": round(total, 1),
            "runs": runs,
            "figures": summary,
        },
    )
    return 0 if all(r["rc"] == 0 for r in runs.values()) else 1


def _headlines(
    name: str, extract: Callable[[dict[str, Any]], list[tuple[str, str, str, bool | None]]] | None
) -> list[tuple[str, str, str, bool | None]]:
    path = common.results_path(name)
    if extract is None or not path.is_file():
        return []
    try:
        return extract(json.loads(path.read_text()))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        return [("(unreadable results)", repr(exc)[:60], "", None)]


if __name__ == "__main__":
    raise SystemExit(main())
