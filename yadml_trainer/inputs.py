"""Reading and checking a work unit's inputs: the task file, the shard and the weights.

Every check raises :class:`~yadml_trainer.exit_status.InvalidInput` (exit status 2) with a
one-line reason, so a volunteer's log and the server's failure report say what was wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from pydantic import ValidationError
from torch import nn

from yadml_common.wire import SHARD_IMAGES, SHARD_LABELS, TaskConfig
from yadml_trainer.exit_status import InvalidInput
from yadml_trainer.models import build_model

__all__ = [
    "build",
    "check_shard",
    "check_weights",
    "load_shard",
    "load_task",
    "load_weights",
    "num_outputs",
]


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


def num_outputs(model: nn.Module) -> int:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 28, 28))
    model.train(was_training)
    return int(out.shape[1])


def build(model_name: str) -> nn.Module:
    """A model to load weights into; leaves the global RNG untouched."""
    rng_state = torch.random.get_rng_state()
    try:
        return build_model(model_name)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    finally:
        torch.random.set_rng_state(rng_state)
