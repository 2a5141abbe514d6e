"""Centralised baseline: the same LeNet trained on the whole train set in one process.

Uses the volunteer trainer's training loop (:func:`yadml_trainer.training.run_epoch`, one
optimizer for the whole run) and the server's datasets and evaluation, so the numbers are
directly comparable with a federated job.

    .venv/bin/python -m bench.centralized --dataset mnist --epochs 5 --threads 2

Prints a table (one row per epoch: train loss, test accuracy/loss/F1, wall time) and writes
``bench/results/centralized_<dataset>.json``.
"""

from __future__ import annotations

import sys
import time

import torch
from rich.live import Live

from bench import common
from work_server.ml.datasets import DATASET_NAMES, load_dataset
from work_server.ml.evaluate import evaluate
from yadml_common.wire import TaskConfig
from yadml_trainer.models import build_model, initial_state
from yadml_trainer.training import deterministic, make_optimizer, run_epoch


def main(argv: list[str] | None = None) -> int:
    p = common.bench_parser(__doc__, results=None)
    p.add_argument("--dataset", default="mnist", choices=DATASET_NAMES)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    common.add_seed(p)
    common.add_threads(p, default=2, help="torch threads")
    args = p.parse_args(argv)

    ds = load_dataset(args.dataset)
    images = torch.from_numpy(ds.train_images)
    labels = torch.from_numpy(ds.train_labels)
    task = TaskConfig(
        dataset=args.dataset, batch_size=args.batch_size, lr=args.lr,
        optimizer=args.optimizer, seed=args.seed,
    )  # fmt: skip
    console = common.console()
    table = common.table(
        f"Centralised LeNet on {args.dataset} ({len(labels)} train samples)",
        ["epoch", "train loss", "test acc", "test loss", "F1 macro", "epoch s", "total s"],
    )
    epochs: list[dict[str, float]] = []
    started = time.perf_counter()
    with deterministic(args.seed, threads=args.threads), Live(table, console=console):
        model = build_model("lenet")
        model.load_state_dict(initial_state("lenet", args.seed))
        optimizer = make_optimizer(model, task)
        generator = torch.Generator().manual_seed(args.seed)
        for epoch in range(1, args.epochs + 1):
            t0 = time.perf_counter()
            loss = run_epoch(
                model, optimizer, images, labels, batch_size=args.batch_size, generator=generator
            )
            train_s = time.perf_counter() - t0
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            ev = evaluate("lenet", state, ds.test_images, ds.test_labels)
            total = time.perf_counter() - started
            epochs.append(
                {"epoch": epoch, "train_loss": loss, **ev.metrics(), "train_s": train_s,
                 "wall_s": total}
            )  # fmt: skip
            table.add_row(
                str(epoch), f"{loss:.4f}", f"{ev.accuracy:.4f}", f"{ev.loss:.4f}",
                f"{ev.f1_macro:.4f}", f"{train_s:.1f}", f"{total:.1f}",
            )  # fmt: skip
    payload = {
        "dataset": args.dataset,
        "model": "lenet",
        "args": {k: str(v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "epochs": epochs,
        "wall_s": time.perf_counter() - started,
    }
    common.write_results(
        args.output or common.results_path(f"centralized_{args.dataset}"), payload, out=console
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
