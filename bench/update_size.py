"""Update size: bytes per work unit down and up for each update encoding, and what the
compression costs in accuracy on MNIST.

For each encoding (fp32, fp16, int8) the same FedAvg run: 4 clients (stratified shards),
each round every client trains from the global weights with the volunteer trainer's
:func:`yadml_trainer.trainer.train_state` and encodes its output exactly as the trainer
does (:func:`yadml_trainer.trainer.encode_output`, written as the safetensors bytes it
would upload, report included); the server side decodes each upload with the validator's
and round closer's :func:`work_server.ml.updates.decode_result`, merges with the job's policy
(simple average) and evaluates on the 10,000 test images. Training is deterministic, so the
runs differ only by the encoding. The fp32 run is the baseline of the same invocation.

    .venv/bin/python -m bench.update_size            # 3 rounds, seed 0 (about 3 minutes)
    .venv/bin/python -m bench.update_size --full     # 5 rounds, seeds 0 1 2

Writes ``bench/results/update_size.json``.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import torch

from bench import common
from bench.fedavg_sim import unit_seed
from work_server.job_spec import SplitSpec
from work_server.merge import SimpleAverageSpec, Update, get_policy
from work_server.ml.datasets import load_dataset
from work_server.ml.evaluate import evaluate
from work_server.ml.shards import encode_shard, encode_weights
from work_server.ml.split import split_indices
from work_server.ml.updates import decode_result
from yadml_common.encoding import ENCODINGS
from yadml_common.wire import (
    REPORT_METADATA_KEY,
    TaskConfig,
    UpdateEncoding,
)
from yadml_trainer.models import initial_state
from yadml_trainer.trainer import encode_output
from yadml_trainer.training import train_state

#: the target: at least this much smaller than fp32 ...
TARGET_RATIO = 2.0
#: ... for at most this accuracy loss, in percentage points
TARGET_LOSS_PT = 0.1


def run(
    encoding: UpdateEncoding,
    data: list[tuple[torch.Tensor, torch.Tensor]],
    test: tuple[Any, Any],
    *,
    rounds: int,
    seed: int,
    threads: int,
) -> dict[str, Any]:
    policy = get_policy(SimpleAverageSpec())
    weights = initial_state("lenet", seed)
    up: list[int] = []
    down = len(encode_weights(weights))
    per_round: list[float] = []
    started = time.perf_counter()
    for rnd in range(1, rounds + 1):
        updates: list[Update] = []
        for shard, (images, labels) in enumerate(data):
            task = TaskConfig(seed=unit_seed(seed, rnd, shard), update_encoding=encoding)
            state, report = train_state(weights, images, labels, task, threads=threads)
            tensors = encode_output(state, weights, encoding)
            meta = {REPORT_METADATA_KEY: report.model_dump_json()}
            body = encode_weights(tensors, meta)  # the bytes the trainer writes and uploads
            up.append(len(body))
            updates.append(Update(decode_result(body, weights, encoding), report.samples))
        weights = policy.merge(updates, weights)
        per_round.append(evaluate("lenet", weights, *test).accuracy)
        print(f"  {encoding} seed {seed} round {rnd}: accuracy {per_round[-1]:.4f}", flush=True)
    return {
        "encoding": encoding,
        "seed": seed,
        "bytes_up_per_unit": statistics.fmean(up),
        "bytes_down_weights_per_unit": down,
        "accuracy_per_round": per_round,
        "accuracy": per_round[-1],
        "wall_s": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    p = common.bench_parser(__doc__, results="update_size")
    p.add_argument("--full", action="store_true", help="5 rounds, seeds 0 1 2")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist", "digits"])
    common.add_threads(p, default=1, help="torch threads (more oversubscribe a busy machine)")
    args = p.parse_args(argv)
    rounds = args.rounds or (5 if args.full else 3)
    seeds = args.seeds or ([0, 1, 2] if args.full else [0])

    console = common.console()
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset)
    test = (ds.test_images, ds.test_labels)
    runs: list[dict[str, Any]] = []
    shard_bytes: list[int] = []
    for seed in seeds:
        idx = split_indices(ds.train_labels, args.shards, SplitSpec(), seed)
        shard_bytes = [len(encode_shard(ds.train_images[i], ds.train_labels[i])) for i in idx]
        data = [
            (torch.from_numpy(ds.train_images[i]), torch.from_numpy(ds.train_labels[i]))
            for i in idx
        ]
        for encoding in ENCODINGS:
            r = run(encoding, data, test, rounds=rounds, seed=seed, threads=args.threads)
            console.print(
                f"seed {seed} {encoding}: accuracy {r['accuracy']:.4f}, "
                f"{r['bytes_up_per_unit'] / 1e3:.1f} kB up per unit ({r['wall_s']:.0f} s)"
            )
            runs.append(r)

    summary: dict[str, dict[str, Any]] = {}
    for encoding in ENCODINGS:
        mine = [r for r in runs if r["encoding"] == encoding]
        base = [r for r in runs if r["encoding"] == "fp32"]
        up = statistics.fmean(r["bytes_up_per_unit"] for r in mine)
        fp32_up = statistics.fmean(r["bytes_up_per_unit"] for r in base)
        # accuracy change vs fp32 with the same seed, in percentage points
        deltas = [100 * (m["accuracy"] - b["accuracy"]) for m, b in zip(mine, base, strict=True)]
        summary[encoding] = {
            "bytes_up_per_unit": up,
            "up_ratio_vs_fp32": fp32_up / up,
            "bytes_down_weights_per_unit": mine[0]["bytes_down_weights_per_unit"],
            "accuracy_mean": statistics.fmean(r["accuracy"] for r in mine),
            "accuracy_delta_pt_mean": statistics.fmean(deltas),
            "accuracy_delta_pt_worst": min(deltas),
            "meets_target": encoding == "fp32"
            or (fp32_up / up >= TARGET_RATIO and min(deltas) >= -TARGET_LOSS_PT),
        }

    shard_mean = statistics.fmean(shard_bytes)
    table = common.table(
        f"update size, {args.dataset}, {args.shards} clients, {rounds} rounds, "
        f"seeds {' '.join(map(str, seeds))}",
        ["encoding", "up/unit", "smaller", "down/unit", "accuracy", "Δ pt", "target"],
    )
    for name, s in summary.items():
        table.add_row(
            name,
            f"{s['bytes_up_per_unit'] / 1e3:.1f} kB",
            f"{s['up_ratio_vs_fp32']:.2f}x",
            f"{s['bytes_down_weights_per_unit'] / 1e3:.1f} kB",
            f"{100 * s['accuracy_mean']:.2f} %",
            f"{s['accuracy_delta_pt_mean']:+.2f}"
            + (f" (worst {s['accuracy_delta_pt_worst']:+.2f})" if len(seeds) > 1 else ""),
            "—" if name == "fp32" else ("yes" if s["meets_target"] else "NO"),
        )
    console.print(table)
    console.print(
        f"up: the result file as uploaded (safetensors header and report included). down: the "
        f"global weights, sent as fp32 in every mode, plus the shard once per host "
        f"({shard_mean / 1e6:.1f} MB, cached by content hash across rounds). Δ pt: accuracy "
        f"minus fp32's with the same seed. Target: >= {TARGET_RATIO:.0f}x smaller at "
        f"<= {TARGET_LOSS_PT} pt accuracy loss."
    )
    common.write_results(
        args.output,
        {
            "dataset": args.dataset,
            "shards": args.shards,
            "rounds": rounds,
            "seeds": seeds,
            "shard_bytes_mean": shard_mean,
            "summary": summary,
            "runs": runs,
            "torch": torch.__version__,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
