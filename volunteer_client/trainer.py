"""The training program every executor runs: one work unit = local epochs on one shard.

``python -m volunteer_client.trainer --shard S --weights W --task task.json
--output out.safetensors [--threads N] [--progress FILE]``

* ``S``: safetensors shard, ``images`` uint8 ``[N, 28, 28]`` and ``labels`` int64 ``[N]`` with
  values in ``0..C-1`` (C = the model's number of outputs), ``N >= 1``.
* ``W``: safetensors state dict whose names, shapes and dtypes match exactly the model named
  by the task, all values finite.
* ``task.json``: a :class:`yadml_common.wire.TaskConfig`.
* Output: the trained state dict (same names/shapes/dtypes as ``W``) with
  ``__metadata__["report"]`` = :class:`yadml_common.wire.TrainReport` JSON, written to a
  temporary file and renamed into place. ``train_loss`` is the mean loss of the last epoch.
* ``--progress FILE``: the fraction done (``0..1``) as text, rewritten (atomically) at most
  every half second and once at the end.
* Exit status: 0 ok, 2 invalid input (unreadable/malformed/mismatched files, bad task JSON,
  bad arguments), 1 any other error (e.g. the loss became non-finite). Errors are one line
  on stderr; on success the report JSON is printed on stdout.

Determinism: the same inputs and seed give bit-identical outputs *on the same software and
hardware*: the same torch version (hence the same CPU kernels), the same CPU instruction
set (oneDNN/MKL pick kernels by CPU), and the same number of intra-op threads (reductions are
split per thread). Training runs under ``torch.manual_seed(task.seed)`` and
``torch.use_deterministic_algorithms(True)``; the batch order of each epoch is a
``torch.randperm`` drawn from a ``torch.Generator`` seeded with ``task.seed``. Called
in-process, :func:`train_state` restores the global RNG state, the deterministic flag and
the thread count afterwards. Replicated work units (quorum > 1) are compared with a tolerance
on the server, so hosts with different CPUs still agree.

This module imports only the standard library, numpy, torch, safetensors and ``yadml_common``
(never ``work_server``): it is what runs on the volunteer's machine.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import safetensors
import safetensors.torch
import torch
from pydantic import ValidationError
from torch import nn
from torch.nn import functional as F

from yadml_common.encoding import encode_update
from yadml_common.nn import build_model, normalize_images
from yadml_common.wire import (
    REPORT_METADATA_KEY,
    SHARD_IMAGES,
    SHARD_LABELS,
    TaskConfig,
    TrainReport,
    UpdateEncoding,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_INVALID_INPUT",
    "EXIT_OK",
    "InvalidInput",
    "check_shard",
    "check_weights",
    "deterministic",
    "encode_output",
    "fit",
    "load_shard",
    "load_task",
    "load_weights",
    "main",
    "make_optimizer",
    "run_epoch",
    "train",
    "train_state",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INVALID_INPUT = 2

#: Seconds between two rewrites of the progress file.
PROGRESS_INTERVAL_S = 0.5

ProgressCallback = Callable[[float], None]


class InvalidInput(ValueError):
    """The trainer's inputs are malformed or do not fit together (exit status 2)."""


# --------------------------------------------------------------------------- inputs


def load_task(path: Path) -> TaskConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"task file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read task file {path}: {exc}") from None
    try:
        return TaskConfig.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise InvalidInput(
            f"invalid task file {path}: {where}: {first['msg']} ({exc.error_count()} error(s))"
        ) from None


def _load_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{what} file not found: {path}")
    try:
        return dict(safetensors.torch.load_file(str(path)))
    except (safetensors.SafetensorError, ValueError, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInput(f"{what} file {path} is not valid safetensors: {message}") from None


def check_shard(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int = 10) -> None:
    """Raise :class:`InvalidInput` unless the shard tensors follow the contract."""
    if images.dtype != torch.uint8 or images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
        raise InvalidInput(
            f"shard images must be uint8 [N, 28, 28], got {images.dtype} {list(images.shape)}"
        )
    if labels.dtype != torch.int64 or labels.dim() != 1:
        raise InvalidInput(
            f"shard labels must be int64 [N], got {labels.dtype} {list(labels.shape)}"
        )
    if labels.shape[0] != images.shape[0]:
        raise InvalidInput(f"shard has {images.shape[0]} images but {labels.shape[0]} labels")
    if images.shape[0] == 0:
        raise InvalidInput("shard is empty")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise InvalidInput(f"shard labels must be in 0..{num_classes - 1}, found {lo}..{hi}")


def load_shard(path: Path, *, num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = _load_tensors(path, "shard")
    expected = {SHARD_IMAGES, SHARD_LABELS}
    if set(tensors) != expected:
        raise InvalidInput(f"shard must hold exactly {sorted(expected)}, got {sorted(tensors)}")
    images, labels = tensors[SHARD_IMAGES], tensors[SHARD_LABELS]
    check_shard(images, labels, num_classes=num_classes)
    return images, labels


def check_weights(state: Mapping[str, torch.Tensor], model: nn.Module) -> None:
    """Raise :class:`InvalidInput` unless ``state`` fits ``model`` exactly and is finite."""
    reference = model.state_dict()
    if set(state) != set(reference):
        missing = sorted(set(reference) - set(state))
        extra = sorted(set(state) - set(reference))
        raise InvalidInput(f"weights do not match the model: missing {missing}, unexpected {extra}")
    for name, ref in reference.items():
        t = state[name]
        if t.dtype != ref.dtype or t.shape != ref.shape:
            raise InvalidInput(
                f"weights {name}: {t.dtype} {list(t.shape)}, "
                f"model needs {ref.dtype} {list(ref.shape)}"
            )
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise InvalidInput(f"weights {name}: non-finite values")


def load_weights(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    state = _load_tensors(path, "weights")
    check_weights(state, model)
    return state


def _num_outputs(model: nn.Module) -> int:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 28, 28))
    model.train(was_training)
    return int(out.shape[1])


def _build(model_name: str) -> nn.Module:
    """A model to load weights into; leaves the global RNG untouched."""
    rng_state = torch.random.get_rng_state()
    try:
        return build_model(model_name)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    finally:
        torch.random.set_rng_state(rng_state)


# --------------------------------------------------------------------------- training


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
    (:func:`yadml_common.nn.normalize_images`). ``on_batch(samples_in_batch)`` is called
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
    model = _build(task.model)
    check_weights(weights, model)
    check_shard(images, labels, num_classes=_num_outputs(model))
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


# --------------------------------------------------------------------------- files


def _atomic_replace(path: Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    _atomic_replace(path, write)


class _ProgressFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.last = -math.inf

    def __call__(self, fraction: float, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= PROGRESS_INTERVAL_S:
            self.last = now
            _write_text(self.path, f"{min(max(fraction, 0.0), 1.0):.4f}\n")


def encode_output(
    state: Mapping[str, torch.Tensor],
    weights: Mapping[str, torch.Tensor],
    encoding: UpdateEncoding,
) -> dict[str, torch.Tensor]:
    """The tensors to upload: ``state`` itself (fp32) or its delta from the input
    ``weights``, compressed as the task says (:mod:`yadml_common.encoding`)."""
    if encoding == "fp32":
        return dict(state)
    encoded = encode_update(
        {k: v.numpy() for k, v in state.items()},
        {k: v.numpy() for k, v in weights.items()},
        encoding,
    )
    return {k: torch.from_numpy(v) for k, v in encoded.items()}


def train(
    *,
    shard_path: Path,
    weights_path: Path,
    task: TaskConfig,
    output_path: Path,
    threads: int | None = None,
    progress_path: Path | None = None,
) -> TrainReport:
    """Train on the files of a work unit and write the output weights (see module docstring)."""
    started = time.perf_counter()
    output_path = Path(output_path)
    progress = _ProgressFile(Path(progress_path)) if progress_path is not None else None
    if progress is not None:
        progress(0.0, force=True)
    model = _build(task.model)
    weights = load_weights(Path(weights_path), model)
    images, labels = load_shard(Path(shard_path), num_classes=_num_outputs(model))
    state, report = train_state(
        weights, images, labels, task, threads=threads, on_progress=progress
    )
    report = report.model_copy(update={"elapsed_s": time.perf_counter() - started})
    metadata = {REPORT_METADATA_KEY: report.model_dump_json()}
    output = encode_output(state, weights, task.update_encoding)
    _atomic_replace(
        output_path, lambda tmp: safetensors.torch.save_file(output, tmp, metadata=metadata)
    )
    if progress is not None:
        progress(1.0, force=True)
    return report


# --------------------------------------------------------------------------- CLI


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INVALID_INPUT, f"trainer: invalid arguments: {message}\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m volunteer_client.trainer",
        description="Train one YADML work unit: local epochs on one shard.",
    )
    p.add_argument("--shard", type=Path, required=True, help="input shard (safetensors)")
    p.add_argument("--weights", type=Path, required=True, help="input weights (safetensors)")
    p.add_argument("--task", type=Path, required=True, help="TaskConfig JSON file")
    p.add_argument("--output", type=Path, required=True, help="output weights (safetensors)")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch intra-op threads")
    p.add_argument("--progress", type=Path, default=None, help="file to write the fraction done")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        task = load_task(args.task)
        report = train(
            shard_path=args.shard,
            weights_path=args.weights,
            task=task,
            output_path=args.output,
            threads=args.threads,
            progress_path=args.progress,
        )
    except InvalidInput as exc:
        print(f"trainer: invalid input: {exc}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    except Exception as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        print(f"trainer: error: {type(exc).__name__}: {detail}", file=sys.stderr)
        return EXIT_ERROR
    print(report.model_dump_json())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
