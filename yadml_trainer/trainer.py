"""The training program every executor runs: one work unit = local epochs on one shard.

``python -m yadml_trainer.trainer --shard S --weights W --task task.json
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

The trainer imports only the standard library, numpy, torch, safetensors and ``yadml_common``
(never ``work_server``): it is what runs on the volunteer's machine.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import safetensors.torch
import torch

from yadml_common.encoding import encode_update
from yadml_common.fsutil import atomic_output, atomic_write
from yadml_common.wire import REPORT_METADATA_KEY, TaskConfig, TrainReport, UpdateEncoding
from yadml_trainer.exit_status import EXIT_ERROR, EXIT_INVALID_INPUT, EXIT_OK, InvalidInput
from yadml_trainer.inputs import build, load_shard, load_task, load_weights, num_outputs
from yadml_trainer.training import train_state

__all__ = ["PROGRESS_INTERVAL_S", "encode_output", "main", "train"]

#: Seconds between two rewrites of the progress file.
PROGRESS_INTERVAL_S = 0.5


class _ProgressFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.last = -math.inf

    def __call__(self, fraction: float, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= PROGRESS_INTERVAL_S:
            self.last = now
            # Rewritten twice a second and worthless after a crash: no fsync.
            atomic_write(self.path, f"{min(max(fraction, 0.0), 1.0):.4f}\n", fsync=False)


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
    model = build(task.model)
    weights = load_weights(Path(weights_path), model)
    images, labels = load_shard(Path(shard_path), num_classes=num_outputs(model))
    state, report = train_state(
        weights, images, labels, task, threads=threads, on_progress=progress
    )
    report = report.model_copy(update={"elapsed_s": time.perf_counter() - started})
    metadata = {REPORT_METADATA_KEY: report.model_dump_json()}
    output = encode_output(state, weights, task.update_encoding)
    with atomic_output(output_path, fsync=False) as tmp:
        safetensors.torch.save_file(output, str(tmp), metadata=metadata)
    if progress is not None:
        progress(1.0, force=True)
    return report


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
        prog="python -m yadml_trainer.trainer",
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
