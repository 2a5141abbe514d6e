"""The two sides of the time-to-accuracy benchmark, and the costs measured on their own.

Evaluation cadence, the same on both sides: the model is evaluated on the whole MNIST test set
(10,000 images) after every pass over the training set (60,000 images, or ``--subset``), i.e.
after every epoch (centralised) or every round (the system, ``local_epochs = 1``: 4 shards x
15,000 samples). The clock stops
when that evaluation is done and its accuracy is >= the target; the evaluations are on the
clock on both sides (the server's round closer evaluates every round anyway).
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import safetensors.torch
import torch
from rich.console import Console

from work_server.demo.api import get_job, submit_job
from work_server.demo.options import FINAL_STATES, HOST, DemoOptions, build_job_spec
from work_server.demo.processes import Demo, prepare_state_dir
from work_server.launch import free_port
from work_server.ml.datasets import load_dataset
from work_server.ml.evaluate import evaluate
from yadml_common.wire import API_PREFIX, SHARD_IMAGES, SHARD_LABELS, TaskConfig
from yadml_trainer.inputs import load_shard, load_weights
from yadml_trainer.models import build_model, initial_state
from yadml_trainer.training import deterministic, make_optimizer, run_epoch

OnRow = Callable[[dict[str, Any]], None]


def centralized(
    *,
    target: float,
    max_epochs: int,
    threads: int,
    seed: int,
    on_epoch: OnRow,
    subset: int | None = None,
) -> dict[str, Any]:
    """LeNet/Adam lr 0.001/batch 64 on all 60,000 images (or the job's ``train_subset``,
    chosen as the server does) in this process until ``target``."""
    started = time.perf_counter()
    ds = load_dataset("mnist")
    images, labels = torch.from_numpy(ds.train_images), torch.from_numpy(ds.train_labels)
    if subset is not None and subset < len(labels):  # work_server.rounds.start_job's choice
        keep = np.sort(np.random.default_rng(seed).permutation(len(labels))[:subset])
        images, labels = images[keep], labels[keep]
    load_s = time.perf_counter() - started
    task = TaskConfig(dataset="mnist", batch_size=64, lr=0.001, optimizer="adam", seed=seed)
    rows: list[dict[str, Any]] = []
    reached: dict[str, Any] | None = None
    with deterministic(seed, threads=threads):
        model = build_model("lenet")
        model.load_state_dict(initial_state("lenet", seed))
        optimizer = make_optimizer(model, task)
        generator = torch.Generator().manual_seed(seed)
        for epoch in range(1, max_epochs + 1):
            t0 = time.perf_counter()
            run_epoch(model, optimizer, images, labels, batch_size=64, generator=generator)
            t1 = time.perf_counter()
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            ev = evaluate("lenet", state, ds.test_images, ds.test_labels)
            t2 = time.perf_counter()
            row = {
                "epoch": epoch,
                "accuracy": ev.accuracy,
                "train_s": t1 - t0,
                "eval_s": t2 - t1,
                "wall_s": t2 - started,
            }
            rows.append(row)
            on_epoch(row)
            if ev.accuracy >= target:
                reached = row
                break
    return {
        "threads": threads,
        "load_s": load_s,
        "epochs": rows,
        "reached": reached is not None,
        "epochs_to_target": reached["epoch"] if reached else None,
        "wall_s": reached["wall_s"] if reached else rows[-1]["wall_s"],
        "train_s": sum(r["train_s"] for r in rows),
        "eval_s": sum(r["eval_s"] for r in rows),
    }


def system(
    opts: DemoOptions, *, target: float, max_wall_s: float, console: Console, on_round: OnRow
) -> dict[str, Any]:
    """Server + volunteer processes (``work_server.demo``) until a round's global model
    reaches ``target``; the job is then cancelled. Returns wall clock marks (UNIX time)."""
    prepare_state_dir(opts.state_dir, reuse=False)
    opts.runs_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://{HOST}:{free_port()}"
    token = secrets.token_urlsafe(16)
    demo = Demo(opts=opts, console=console)
    marks: dict[str, float] = {"start": time.time()}
    job_id = -1
    reached_round: int | None = None
    rounds: list[dict[str, Any]] = []
    try:
        demo.start_server(int(url.rsplit(":", 1)[1]), token)
        demo.wait_healthy(url)
        marks["server_up"] = time.time()
        demo.start_clients(url)
        marks["clients_up"] = time.time()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30.0) as http:
            marks["submit"] = time.time()
            job_id = submit_job(http, build_job_spec(opts))
            while reached_round is None:
                demo.check_server()
                job = get_job(http, job_id)
                for m in job.rounds[len(rounds) :]:
                    row = {"round": m.round, "accuracy": m.accuracy, "seen_s": time.time()}
                    rounds.append(row)
                    on_round(row)
                    if m.accuracy >= target and reached_round is None:
                        reached_round = m.round
                        marks["seen"] = time.time()
                if reached_round is not None or job.state in FINAL_STATES:
                    break
                if time.time() - marks["submit"] > max_wall_s:
                    console.print(f"[yellow]giving up after {max_wall_s:.0f} s[/]")
                    break
                time.sleep(0.1)
            http.post(f"{API_PREFIX}/jobs/{job_id}/cancel")
    finally:
        demo.stop()
    return {"job_id": job_id, "marks": marks, "rounds": rounds, "reached_round": reached_round}


def _shard_files(root: Path, samples: int) -> tuple[Path, Path]:
    ds = load_dataset("mnist")
    shard, weights = root / "shard.safetensors", root / "weights.safetensors"
    safetensors.torch.save_file(
        {
            SHARD_IMAGES: torch.from_numpy(ds.train_images[:samples].copy()),
            SHARD_LABELS: torch.from_numpy(ds.train_labels[:samples].copy()),
        },
        str(shard),
    )
    safetensors.torch.save_file(initial_state("lenet", 0), str(weights))
    return shard, weights


def _median_s(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def unit_costs(samples: int) -> dict[str, float]:
    """What one unit pays besides training, measured on its own in this process (medians):
    a fresh trainer process (interpreter + ``import torch`` + teardown), reading the shard and
    weights, writing the output weights."""
    cold_start = _median_s(
        lambda: subprocess.run([sys.executable, "-c", "import yadml_trainer.trainer"], check=True),
        repeat=3,
    )
    with tempfile.TemporaryDirectory(prefix="yadml-tta-") as tmp:
        root = Path(tmp)
        shard, weights = _shard_files(root, samples)
        model = build_model("lenet")
        state = load_weights(weights, model)
        load = _median_s(lambda: (load_shard(shard), load_weights(weights, model)))
        save = _median_s(lambda: safetensors.torch.save_file(state, str(root / "out")))
    return {"process_start_teardown_s": cold_start, "data_load_s": load, "output_write_s": save}
