"""Scale model: the real scheduling code driven by a discrete-event simulation of up to
100,000 volunteer hosts on a simulated clock.

For each host count the same job (``digits``, LeNet, quorum-2 replication) runs from
submission to completion: real ``dispatch.claim_work``, upload acceptance, failure reports,
heartbeats and the transitioner, validator, round-closer, work-generator, job-finisher and
file-deleter passes on a real SQLite database, with ``now`` from the simulated clock. The
simulated hosts (on/off availability, speed, errors, lateness: ``bench/scalesim/hosts.py``)
are plain numpy records. Training is simulated: an upload is the unit's LeNet input weights
plus a small deterministic update.

Reports, per host count: server CPU per request type (``time.process_time`` around the real
calls), the units/day the scheduling logic sustains, simulated round completion times, the
offered server load and which component dominates it; baseline in the same run: an empty
SQLite transaction and the bare claim ``UPDATE``.

    .venv/bin/python -m bench.scale_sim            # 100 to 100,000 hosts, ~1-2 min
    .venv/bin/python -m bench.scale_sim --full     # bigger job, more rounds, 2 s daemons

Writes ``bench/results/scale_sim.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import common
from bench.scalesim.hosts import HostModel
from bench.scalesim.report import print_tables
from bench.scalesim.scenario import job_spec, run_scenario


async def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    spec = job_spec(shards=args.shards, rounds=args.rounds, delay_bound_s=args.delay_bound_s)
    out = []
    with tempfile.TemporaryDirectory(prefix="yadml-scale-") as tmp:
        for i, n in enumerate(args.hosts):
            print(f"{n} hosts ...", flush=True)
            out.append(
                await run_scenario(
                    n,
                    spec,
                    Path(tmp) / f"s{i}",
                    daemon_interval_s=args.daemon_interval_s,
                    seed=args.seed,
                )
            )
    return out


def main() -> int:
    p = common.bench_parser(__doc__, results="scale_sim")
    p.add_argument(
        "--full",
        action="store_true",
        help="1000 shards, 3 rounds, daemons every 2 s as the server runs them "
        "(default: 60 shards, 2 rounds, daemons every 60 s of simulated time)",
    )
    p.add_argument("--hosts", type=int, nargs="+", default=None)
    p.add_argument("--shards", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--daemon-interval-s", type=float, default=None)
    p.add_argument("--delay-bound-s", type=float, default=3600.0)
    common.add_seed(p)
    args = p.parse_args()
    full = args.full
    args.hosts = args.hosts or [100, 1000, 10000, 100000]
    args.shards = args.shards or (1000 if full else 60)
    args.rounds = args.rounds or (3 if full else 2)
    args.daemon_interval_s = args.daemon_interval_s or (2.0 if full else 60.0)

    t0 = time.perf_counter()
    scenarios = asyncio.run(run_all(args))
    print_tables(scenarios)
    common.write_results(
        args.output,
        {
            "mode": "full" if full else "default",
            "job": {
                "dataset": "digits",
                "model": "lenet",
                "shards": args.shards,
                "rounds": args.rounds,
                "min_quorum": 2,
                "target_nresults": 2,
                "delay_bound_s": args.delay_bound_s,
            },
            "daemon_interval_s": args.daemon_interval_s,
            "host_model": asdict(HostModel()),
            "scenarios": scenarios,
            "wall_s": time.perf_counter() - t0,
            "machine": f"{os.cpu_count()} cores",
        },
    )
    print(f"wrote {args.output} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
