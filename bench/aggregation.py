"""Aggregation cost per merge policy, against the memory-bandwidth floor.

For K updates of P parameters (LeNet: 61,706; the CNN of the FedAvg paper: 1,663,370),
time each merge policy and compare it with the floor: one numpy pass reading the same
K*P float32 values (``acc += x_k``), timed in the same run. Updates are served lazily from
a pool of distinct arrays, as the round closer reads them from blob files, so a streaming
policy never holds all K updates; the table reports peak extra memory (tracemalloc does not
see torch, so we measure the peak RSS delta of a fresh subprocess per cell). Each time is the
best of up to 3 runs when a run is short (under ``REPEAT_BELOW_S``), so a loaded machine's
noise does not decide the sub-second cells; the floor is timed the same way in the same cell.

    .venv/bin/python -m bench.aggregation            # K = 10, 100, 1000
    .venv/bin/python -m bench.aggregation --quick    # K = 10, 100

Writes ``bench/results/aggregation.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import time
from collections.abc import Iterator, Sequence
from typing import Any, overload

from bench import common

#: parameter shapes of the two models
MODELS: dict[str, list[tuple[int, ...]]] = {
    "lenet-62k": [
        (6, 1, 5, 5),
        (6,),
        (16, 6, 5, 5),
        (16,),
        (120, 16, 5, 5),
        (120,),
        (84, 120),
        (84,),
        (10, 84),
        (10,),
    ],
    "fedavg-cnn-1.66M": [
        (32, 1, 5, 5),
        (32,),
        (64, 32, 5, 5),
        (64,),
        (512, 3136),
        (512,),
        (10, 512),
        (10,),
    ],
}
POLICIES = ["simple_average", "regularized", "median", "trimmed_mean", "krum"]
POOL = 24  # distinct update arrays cycled through (bounds the benchmark's own memory)
REPEAT_BELOW_S = 1.0  # runs shorter than this are repeated (up to 3 runs), best one kept


def _best_time(fn: Any) -> float:
    """Seconds of the fastest of up to 3 calls of ``fn``; one call when it takes long."""
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        if best >= REPEAT_BELOW_S:
            break
    return best


def _params(model: str) -> int:
    return sum(math.prod(shape) for shape in MODELS[model])


class LazyUpdates(Sequence[Any]):
    """K updates materialised on access from a small pool, like blobs read on demand."""

    def __init__(self, pool: list[dict[str, Any]], k: int) -> None:
        self.pool, self.k = pool, k

    def __len__(self) -> int:
        return self.k

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...
    def __getitem__(self, i: int | slice) -> Any:
        from work_server.merge import Update

        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.k))]
        if not -self.k <= i < self.k:
            raise IndexError(i)
        return Update(weights=self.pool[i % len(self.pool)], num_samples=100 + i % 7)

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(self.k))


def run_cell(model: str, k: int, policy: str) -> dict[str, Any]:
    import numpy as np
    import torch

    from work_server.merge import get_policy, parse_merge_spec

    torch.set_num_threads(1)
    shapes = MODELS[model]
    gen = torch.Generator().manual_seed(0)
    pool = [
        {f"t{j}": torch.randn(s, generator=gen) for j, s in enumerate(shapes)}
        for _ in range(min(POOL, k))
    ]
    previous = {name: torch.zeros_like(t) for name, t in pool[0].items()}
    p = sum(t.numel() for t in pool[0].values())
    flat_pool = [np.concatenate([t.numpy().ravel() for t in u.values()]) for u in pool]

    def floor() -> None:  # one pass over K*P float32 values
        acc = np.zeros(p, np.float32)
        for i in range(k):
            acc += flat_pool[i % len(flat_pool)]

    floor_s = _best_time(floor)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    spec = parse_merge_spec({"method": policy})
    merge = get_policy(spec)
    updates = LazyUpdates(pool, k)
    policy_s = _best_time(lambda: merge.merge(updates, previous))
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "model": model,
        "params": p,
        "k": k,
        "policy": policy,
        "seconds": policy_s,
        "floor_seconds": floor_s,
        "floor_ratio": floor_s / policy_s if policy_s else 0.0,
        "floor_gb_per_s": k * p * 4 / floor_s / 1e9,
        "peak_extra_mb": max(0, rss1 - rss0) / 1024,
        "updates_mb": k * p * 4 / 2**20,
    }


def main() -> int:
    ap = common.bench_parser(__doc__, results="aggregation")
    ap.add_argument("--quick", action="store_true", help="K = 10 and 100 only")
    ap.add_argument("--cell", nargs=3, metavar=("MODEL", "K", "POLICY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cell:
        print(json.dumps(run_cell(args.cell[0], int(args.cell[1]), args.cell[2])))
        return 0

    console = common.console()
    started = time.perf_counter()
    ks = [10, 100] if args.quick else [10, 100, 1000]
    rows: list[dict[str, Any]] = []
    for model in MODELS:
        for k in ks:
            for policy in POLICIES:
                if policy == "krum" and k * _params(model) > 20_000_000:
                    continue  # O(K^2 P) pairwise distances: see docs/performance.md
                out = subprocess.run(
                    common.module_command("bench.aggregation", "--cell", model, str(k), policy),
                    cwd=common.ROOT,
                    capture_output=True,
                    text=True,
                    timeout=1800,
                )
                if out.returncode != 0:
                    rows.append(
                        {
                            "model": model,
                            "k": k,
                            "policy": policy,
                            "error": out.stderr.strip().splitlines()[-1],
                        }
                    )
                    console.print(f"{model} K={k} {policy}: FAILED {rows[-1]['error']}")
                    continue
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                r = rows[-1]
                console.print(
                    f"{model} K={k} {policy}: {r['seconds']:.3f} s "
                    f"(floor {r['floor_seconds']:.3f} s)"
                )
    base = {
        (r["model"], r["k"]): r["seconds"]
        for r in rows
        if r.get("policy") == "simple_average" and "seconds" in r
    }
    table = common.table(
        "aggregation: seconds per merge, vs the one-pass floor",
        [
            "model",
            "K",
            "policy",
            "seconds",
            "floor s",
            "% of floor speed",
            "x simple_average",
            "peak extra MB",
            "updates MB",
        ],
    )
    for r in rows:
        if "seconds" not in r:
            table.add_row(r["model"], str(r["k"]), r["policy"], "failed", "", "", "", "", "")
            continue
        rel = r["seconds"] / base[(r["model"], r["k"])] if (r["model"], r["k"]) in base else 0
        r["x_simple_average"] = rel
        table.add_row(
            r["model"],
            str(r["k"]),
            r["policy"],
            f"{r['seconds']:.3f}",
            f"{r['floor_seconds']:.3f}",
            f"{100 * r['floor_ratio']:.0f}%",
            f"{rel:.1f}",
            f"{r['peak_extra_mb']:.0f}",
            f"{r['updates_mb']:.0f}",
        )
    console.print(table)
    total_s = time.perf_counter() - started
    console.print(f"whole benchmark: {total_s:.0f} s")
    common.write_results(args.output, {"rows": rows, "pool": POOL, "total_seconds": total_s})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
