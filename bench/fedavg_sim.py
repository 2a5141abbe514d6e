"""In-process FedAvg simulation: the product's ML path without the server or the network.

split the train set -> each round, train every shard with the volunteer trainer's
:func:`yadml_trainer.trainer.train_state` starting from the global weights (a fresh
optimizer per client and round) -> merge with the job's policy -> evaluate on the test set.

    .venv/bin/python -m bench.fedavg_sim --dataset mnist --rounds 5 --shards 4 --threads 2

Prints one line per round and writes ``bench/results/fedavg_<dataset>.json``.
"""

from __future__ import annotations

import hashlib
import sys
import time

import torch

from bench import common
from work_server.job_spec import SplitSpec
from work_server.merge import Update, get_policy, parse_merge_spec
from work_server.ml.datasets import load_dataset
from work_server.ml.evaluate import evaluate
from work_server.ml.split import split_indices
from yadml_common.wire import TaskConfig
from yadml_trainer.models import initial_state
from yadml_trainer.training import train_state


def unit_seed(job_seed: int, round_number: int, shard: int) -> int:
    digest = hashlib.sha256(f"yadml:{job_seed}:{round_number}:{shard}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31)


def main(argv: list[str] | None = None) -> int:
    p = common.bench_parser(__doc__, results=None)
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist", "digits"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument(
        "--split", default="stratified", choices=["random", "stratified", "dirichlet", "shards"]
    )
    p.add_argument(
        "--merge",
        default="simple_average",
        choices=["simple_average", "median", "trimmed_mean", "regularized"],
    )
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    common.add_seed(p)
    common.add_threads(p, default=2, help="torch threads")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset)
    shards = split_indices(ds.train_labels, args.shards, SplitSpec(method=args.split), args.seed)
    data = [
        (torch.from_numpy(ds.train_images[idx]), torch.from_numpy(ds.train_labels[idx]))
        for idx in shards
    ]
    policy = get_policy(parse_merge_spec({"method": args.merge}))
    weights = initial_state("lenet", args.seed)
    rounds: list[dict[str, float]] = []
    started = time.perf_counter()
    print(
        f"{args.dataset}: {len(ds.train_labels)} train in {args.shards} shards "
        f"({args.split}), {len(ds.test_labels)} test, merge {policy.name}",
        flush=True,
    )
    for rnd in range(1, args.rounds + 1):
        t0 = time.perf_counter()
        updates: list[Update] = []
        losses: list[float] = []
        for shard, (images, labels) in enumerate(data):
            task = TaskConfig(
                dataset=args.dataset,
                local_epochs=args.local_epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                optimizer=args.optimizer,
                seed=unit_seed(args.seed, rnd, shard),
            )
            state, report = train_state(weights, images, labels, task, threads=args.threads)
            updates.append(Update(state, report.samples))
            losses.append(report.train_loss)
        t_train = time.perf_counter() - t0
        weights = policy.merge(updates, weights)
        ev = evaluate("lenet", weights, ds.test_images, ds.test_labels)
        wall = time.perf_counter() - t0
        rounds.append(
            {
                "round": rnd,
                **ev.metrics(),
                "train_loss": sum(losses) / len(losses),
                "train_s": t_train,
                "round_s": wall,
            }
        )
        print(
            f"round {rnd:3d}: test acc {ev.accuracy:.4f}  loss {ev.loss:.4f}  "
            f"f1 {ev.f1_macro:.4f}  train loss {rounds[-1]['train_loss']:.4f}  "
            f"train {t_train:6.1f}s  round {wall:6.1f}s",
            flush=True,
        )
    total = time.perf_counter() - started
    print(f"final accuracy {rounds[-1]['accuracy']:.4f} after {args.rounds} rounds, {total:.1f}s")
    common.write_results(
        args.output or common.results_path(f"fedavg_{args.dataset}"),
        {
            "args": {k: str(v) for k, v in vars(args).items()},
            "torch": torch.__version__,
            "rounds": rounds,
            "wall_s": total,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
