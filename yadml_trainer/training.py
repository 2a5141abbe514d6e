"""The training itself: optimizer, epochs, determinism, training a state dict in memory."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from yadml_common.wire import TaskConfig, TrainReport
from yadml_trainer.exit_status import InvalidInput
from yadml_trainer.inputs import build, check_shard, check_weights, num_outputs
from yadml_trainer.models import normalize_images

__all__ = [
    "ProgressCallback",
    "deterministic",
    "fit",
    "make_optimizer",
    "run_epoch",
    "train_state",
]

ProgressCallback = Callable[[float], None]


def make_optimizer(model: nn.Module, task: TaskConfig) -> torch.optim.Optimizer:
    """A fresh optimizer as the task says (Adam, or SGD with momentum)."""
    if task.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=task.lr, weight_decay=task.weight_decay)
    if task.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=task.lr, momentum=task.momentum, weight_decay=task.weight_decay
        )
    raise InvalidInput(f"unknown optimizer {task.optimizer!r}")  # pragma: no cover


def run_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    generator: torch.Generator,
    on_batch: Callable[[int], None] | None = None,
) -> float:
    """One pass over the data in an order drawn from ``generator``; returns the mean loss.

    ``images`` are uint8 ``[N, 28, 28]``, normalised batch by batch
    (:func:`yadml_trainer.models.normalize_images`). ``on_batch(samples_in_batch)`` is called
    after every optimizer step.
    """
    model.train()
    n = images.shape[0]
    order = torch.randperm(n, generator=generator)
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        x = normalize_images(images[idx])
        y = labels[idx]
        optimizer.zero_grad(set_to_none=True)
        loss = F.nll_loss(model(x), y)
        torch.autograd.backward(loss)
        optimizer.step()
        total += loss.detach().to(torch.float64) * len(idx)
        if on_batch is not None:
            on_batch(len(idx))
    return float(total) / n


def fit(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    task: TaskConfig,
    *,
    on_progress: ProgressCallback | None = None,
) -> float:
    """``task.local_epochs`` epochs with a fresh optimizer; returns the last epoch's mean loss.

    The batch order comes from a ``torch.Generator`` seeded with ``task.seed``. Call inside
    :func:`deterministic` for reproducible results.
    """
    optimizer = make_optimizer(model, task)
    generator = torch.Generator().manual_seed(task.seed)
    total = images.shape[0] * task.local_epochs
    done = 0

    def on_batch(samples: int) -> None:
        nonlocal done
        done += samples
        if on_progress is not None:
            on_progress(done / total)

    loss = math.nan
    for _ in range(task.local_epochs):
        loss = run_epoch(
            model,
            optimizer,
            images,
            labels,
            batch_size=task.batch_size,
            generator=generator,
            on_batch=on_batch,
        )
        if not math.isfinite(loss):
            raise RuntimeError(f"training diverged: loss is {loss}")
    return loss


@contextlib.contextmanager
def deterministic(seed: int, *, threads: int | None = None) -> Iterator[None]:
    """Seed torch, enable deterministic algorithms and set the thread count; restore after."""
    rng_state = torch.random.get_rng_state()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    old_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)
        torch.random.set_rng_state(rng_state)
        if threads is not None:
            torch.set_num_threads(old_threads)


def train_state(
    weights: Mapping[str, torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    task: TaskConfig,
    *,
    threads: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> tuple[dict[str, torch.Tensor], TrainReport]:
    """Train the task's model from ``weights`` on a shard in memory (validated first).

    Returns the new state dict (fresh contiguous tensors) and the report.
    """
    if threads is not None and threads < 1:
        raise InvalidInput(f"threads must be >= 1, got {threads}")
    started = time.perf_counter()
    model = build(task.model)
    check_weights(weights, model)
    check_shard(images, labels, num_classes=num_outputs(model))
    model.load_state_dict(dict(weights), strict=True)
    with deterministic(task.seed, threads=threads):
        loss = fit(model, images, labels, task, on_progress=on_progress)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    report = TrainReport(
        train_loss=loss,
        samples=int(images.shape[0]),
        elapsed_s=time.perf_counter() - started,
        epochs=task.local_epochs,
    )
    return state, report
