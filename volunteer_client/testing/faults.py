"""Fault and attack injection, for testing and demos: an :class:`Executor` wrapper.

``python -m volunteer_client.testing run --faults crash:0.3,late:0.1 --attack
signflip[:PARAM] [--fault-seed N]`` (:mod:`.cli`) wraps the real executor in
:class:`FaultyExecutor`; the volunteer's ``yadml-client run`` has no such switch. The server
never asks for any of this: it plays a volunteer's broken hardware or bad intent, and the
trainer itself (:mod:`yadml_trainer`) contains no fault or attack code: attacks change the
trainer's input shard (label flipping) or its output file.

**Faults**, drawn independently for every unit (at most one per unit; the probabilities must
add up to at most 1):

* ``crash``: the trainer is killed at a uniformly random time in its first
  ``crash_window_s`` seconds (its executor is cancelled, which kills its process group; if
  training ended sooner, the output is discarded), and the client reports the failure
  ``crash`` (``outcome = client_error`` on the server, which reissues the unit at once);
* ``vanish``: the client drops the unit silently and never reports: the server sees
  ``no_reply`` at the deadline (a host that was switched off). The unit's slot is held until
  the deadline has passed, then the client moves on;
* ``late``: the unit is trained, then held until ``late_extra_s`` seconds after its deadline
  and uploaded. The server has marked it ``no_reply`` by then and reissued it; it accepts the
  late upload if the work unit still needs it (``late``), else records it ``too_late``;
* ``garbage``: the output is replaced by finite random weights of the right shapes (broken
  hardware that still produces files).

**Attacks** (``--attack``), applied to *every* unit of an attacking client: see
:mod:`.attacks` (``signflip``, ``noise``, ``scale``, ``labelflip``,
``alie``). ``labelflip`` trains on a copy of the shard with flipped labels; the others
rewrite the trained output (keeping its training report).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ExecutionFailed
from ..executors.base import ExecutionRequest, ExecutionResult, Executor

__all__ = [
    "FAULTS",
    "AttackSpec",
    "FaultyExecutor",
    "draw_fault",
    "parse_attack",
    "parse_faults",
]

FAULTS = ("crash", "vanish", "late", "garbage")
ATTACK_NAMES = ("signflip", "noise", "scale", "labelflip", "alie")
FLIPPED_SHARD = "shard.flipped.safetensors"

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class AttackSpec:
    name: str
    param: float | None = None


def _split_item(item: str) -> tuple[str, str | None]:
    name, sep, value = item.strip().partition(":")
    return name.strip().lower(), (value.strip() if sep else None)


def parse_faults(text: str) -> dict[str, float]:
    """``"crash:0.3,late:0.1"`` -> ``{"crash": 0.3, "late": 0.1}``. Empty text: no faults."""
    faults: dict[str, float] = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        name, value = _split_item(item)
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r} (one of {', '.join(FAULTS)})")
        if name in faults:
            raise ValueError(f"fault {name!r} given twice")
        if value is None:
            raise ValueError(f"fault {name!r} needs a probability, e.g. {name}:0.1")
        try:
            p = float(value)
        except ValueError:
            raise ValueError(f"fault {name!r}: not a number: {value!r}") from None
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"fault {name!r}: probability {p} not in [0, 1]")
        faults[name] = p
    if sum(faults.values()) > 1.0 + 1e-9:
        raise ValueError(f"fault probabilities add up to {sum(faults.values()):.3g} > 1")
    return faults


def parse_attack(text: str) -> AttackSpec | None:
    """``"signflip"``, ``"noise:0.5"``... -> :class:`AttackSpec`; empty/``none`` -> None."""
    if not text.strip() or text.strip().lower() == "none":
        return None
    name, value = _split_item(text)
    if name not in ATTACK_NAMES:
        raise ValueError(f"unknown attack {name!r} (one of {', '.join(ATTACK_NAMES)})")
    if value is None:
        return AttackSpec(name)
    try:
        param = float(value)
    except ValueError:
        raise ValueError(f"attack {name!r}: not a number: {value!r}") from None
    if param != param or param in (float("inf"), float("-inf")):
        raise ValueError(f"attack {name!r}: parameter must be finite")
    return AttackSpec(name, param)


def draw_fault(faults: Mapping[str, float], u: float) -> str | None:
    """The fault for one unit, from ``u`` uniform in [0, 1): faults take consecutive slices
    of [0, 1) in ``FAULTS`` order."""
    edge = 0.0
    for name in FAULTS:
        edge += faults.get(name, 0.0)
        if u < edge:
            return name
    return None


# ----------------------------------------------------------------------------- file transforms
# torch is imported lazily: an honest client's daemon never loads it.


def _flip_shard(src: Path, dest: Path) -> None:
    import safetensors.torch

    from yadml_common.wire import SHARD_IMAGES, SHARD_LABELS

    from .attacks import flip_labels

    tensors = safetensors.torch.load_file(str(src))
    tensors[SHARD_LABELS] = flip_labels(tensors[SHARD_LABELS]).contiguous()
    safetensors.torch.save_file(
        {SHARD_IMAGES: tensors[SHARD_IMAGES], SHARD_LABELS: tensors[SHARD_LABELS]}, str(dest)
    )


def _rewrite_output(
    request: ExecutionRequest, attack: AttackSpec | None, garbage: bool, seed: int
) -> None:
    import safetensors
    import safetensors.torch
    import torch

    from yadml_common.encoding import decode_update
    from yadml_trainer.trainer import encode_output

    from .attacks import apply_update_attack, garbage_like

    with safetensors.safe_open(str(request.output_path), framework="pt") as f:
        metadata = f.metadata()
    after = safetensors.torch.load_file(str(request.output_path))
    before = safetensors.torch.load_file(str(request.weights_path))
    encoding = request.task.update_encoding
    if encoding != "fp32":  # attack the weights the update stands for, then encode again
        decoded = decode_update(
            {k: v.numpy() for k, v in after.items()},
            {k: v.numpy() for k, v in before.items()},
            encoding,
        )
        after = {k: torch.from_numpy(v) for k, v in decoded.items()}
    generator = torch.Generator().manual_seed(seed)
    if garbage:
        new = garbage_like(after, generator)
    else:
        assert attack is not None
        new = apply_update_attack(
            attack.name, before, after, param=attack.param, generator=generator
        )
    new = encode_output(new, before, encoding)
    tmp = request.output_path.with_name(f".{request.output_path.name}.attack.tmp")
    safetensors.torch.save_file(dict(sorted(new.items())), str(tmp), metadata=metadata)
    tmp.replace(request.output_path)


class FaultyExecutor(Executor):
    """Runs ``inner`` and injects the configured faults and attack (see the module)."""

    def __init__(
        self,
        inner: Executor,
        *,
        faults: Mapping[str, float] | None = None,
        attack: AttackSpec | None = None,
        seed: int | None = None,
        crash_window_s: float = 5.0,
        late_extra_s: float = 3.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.runtime = inner.runtime
        self.faults = dict(faults or {})
        self.attack = attack
        self.rng = random.Random(seed)
        self.crash_window_s = crash_window_s
        self.late_extra_s = late_extra_s
        self._sleep = sleep
        self._clock = clock
        #: what was injected, per unit (for logs and tests): fault name or "ok"
        self.history: list[str] = []

    async def prepare(self) -> None:
        await self.inner.prepare()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def run(self, request: ExecutionRequest) -> ExecutionResult:
        started = self._clock()
        fault = draw_fault(self.faults, self.rng.random())
        self.history.append(fault or "ok")
        time_left = request.timeout_s if request.timeout_s is not None else 0.0
        if fault == "vanish":
            await self._sleep(max(0.0, time_left) + self.late_extra_s)
            raise ExecutionFailed("aborted", "injected fault: the host vanished")
        if fault == "crash":
            window = self.rng.uniform(0.0, self.crash_window_s)
            # on timeout wait_for cancels the executor, which kills the trainer
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._run_attacked(request), timeout=window)
            raise ExecutionFailed("crash", f"injected fault: crashed after {window:.1f} s")
        result = await self._run_attacked(request)
        if fault == "garbage":
            await asyncio.to_thread(_rewrite_output, request, None, True, self.rng.getrandbits(62))
        elif fault == "late":
            elapsed = self._clock() - started
            await self._sleep(max(0.0, time_left - elapsed) + self.late_extra_s)
        return result

    async def _run_attacked(self, request: ExecutionRequest) -> ExecutionResult:
        attack = self.attack
        if attack is not None and attack.name == "labelflip":
            flipped = request.work_dir / FLIPPED_SHARD
            await asyncio.to_thread(_flip_shard, request.shard_path, flipped)
            request = replace(request, shard_path=flipped)
        result = await self.inner.run(request)
        if attack is not None and attack.name != "labelflip":
            await asyncio.to_thread(
                _rewrite_output, request, attack, False, self.rng.getrandbits(62)
            )
        return result
