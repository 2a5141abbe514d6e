"""The executor interface, and how a trainer run's end becomes a failure reason.

An executor runs the trainer on one unit's files somewhere isolated: ``async def
run(request) -> ExecutionResult``. It raises :class:`~volunteer_client.errors.ExecutionFailed`
with a FailureReport reason (``timeout``, ``crash``, ``invalid_input``, ``out_of_memory``,
``executor_error``, ``aborted``) when no output came out, and on cancellation stops whatever
it started before re-raising ``asyncio.CancelledError``.

:func:`classify_exit` is the one place where the way a run ended (the trainer's exit status
of :mod:`yadml_trainer.exit_status`, a signal, the kernel's OOM killer, the time limit) is
turned into that reason; every executor reports through it, so a unit that ran out of memory
is ``out_of_memory`` whichever executor ran it.

Concrete executors import this module; it imports none of them.
"""

from __future__ import annotations

import signal as signals
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from yadml_common.wire import Runtime, TaskConfig
from yadml_trainer.exit_status import EXIT_INVALID_INPUT, EXIT_OK

from ..errors import ExecutionFailed

__all__ = [
    "OOM_MARKERS",
    "ExecutionRequest",
    "ExecutionResult",
    "Executor",
    "classify_exit",
]

#: Text in a run's log that means it ran out of memory: Python's ``MemoryError``, ENOMEM
#: (PyTorch's CPU allocator ends with "Cannot allocate memory"), and the Linux OOM killer's
#: own messages ("Out of memory: Killed process", "oom-kill"), which a VM's console carries.
OOM_MARKERS = ("MemoryError", "out of memory", "Cannot allocate memory", "oom-kill")


@dataclass(frozen=True)
class ExecutionRequest:
    """One run of the trainer. All paths are absolute; ``work_dir`` holds them all."""

    work_dir: Path
    shard_path: Path
    weights_path: Path
    task: TaskConfig
    output_path: Path
    timeout_s: float | None = None
    threads: int | None = None
    progress_path: Path | None = None
    #: The image the unit names (an id or ``name@sha256:...``); the docker executor (an
    #: image id or digest) and the vm executor (``yadml-vm@sha256:<raw disk sha256>``) use it.
    image: str | None = None


@dataclass(frozen=True)
class ExecutionResult:
    output_path: Path
    elapsed_s: float
    log_tail: str = ""


class Executor(ABC):
    """Runs the trainer for one :class:`ExecutionRequest`."""

    #: The wire ``Runtime`` this executor provides (what the client asks work for).
    runtime: Runtime = "process"

    @abstractmethod
    async def run(self, request: ExecutionRequest) -> ExecutionResult:
        """Produce ``request.output_path`` or raise ``ExecutionFailed``."""

    async def prepare(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Called once by the client before its first unit: remove what a killed earlier run
        of this client left behind. Raises ``ExecutionFailed`` when this executor cannot
        work on this computer at all (the client then stops)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Release what the executor keeps between units (e.g. warm containers)."""


def _ending(status: int | None, signal: int | None, context: str) -> str:
    """One line on how the run ended: ``[context: ]killed by SIGKILL | exit status N``."""
    how = ""
    if signal is not None:
        valid = signal in signals.valid_signals()
        how = f"killed by {signals.Signals(signal).name if valid else signal}"
    elif status is not None:
        how = f"exit status {status}"
    return _joined(context, how) or "no exit status"


def _joined(*parts: str) -> str:
    return ": ".join(part for part in parts if part)


def _looks_out_of_memory(log_tail: str) -> bool:
    lowered = log_tail.lower()
    return any(marker.lower() in lowered for marker in OOM_MARKERS)


def classify_exit(
    status: int | None,
    *,
    log_tail: str = "",
    signal: int | None = None,
    oom_killed: bool = False,
    timed_out: bool = False,
    output_written: bool = True,
    time_limit_s: float | None = None,
    memory_limit_mb: int | None = None,
    context: str = "",
) -> ExecutionFailed | None:
    """The failure a trainer run ended in, or None when it succeeded.

    ``status``: the trainer's own exit status (None when it gave none: killed, or its worker
    died); ``signal``: the signal that killed it; ``oom_killed``: the executor knows the
    kernel's OOM killer struck (Docker's ``OOMKilled``, status 137 inside the VM, where only
    that killer sends SIGKILL); ``timed_out``: it was stopped at the time limit;
    ``output_written``: with status 0, whether the output file came out. ``context`` (e.g.
    "the warm trainer died") leads the line on how it ended.

    The rules, first match wins:

    1. stopped at the time limit: ``timeout``;
    2. status 0: success, or ``crash`` without an output file;
    3. killed by the OOM killer: ``out_of_memory`` (even with status 2: an input the trainer
       could not read for lack of memory must not be declared invalid everywhere);
    4. status 2: ``invalid_input``;
    5. a memory error in the log (:data:`OOM_MARKERS`): ``out_of_memory``;
    6. anything else: ``crash``.

    The detail is one line on how the run ended, then the log tail.
    """
    if timed_out:
        time_limit = f"{time_limit_s or 0.0:.1f} s"
        return ExecutionFailed(
            "timeout", f"killed after the time limit of {time_limit}\n{log_tail}"
        )
    if status == EXIT_OK and signal is None:
        if output_written:
            return None
        ending = _ending(None, None, _joined(context, "exit 0 but no output file"))
        return ExecutionFailed("crash", f"{ending}\n{log_tail}")
    ending = _ending(status, signal, context)
    if oom_killed:
        at = f" at the {memory_limit_mb} MB limit" if memory_limit_mb is not None else ""
        return ExecutionFailed(
            "out_of_memory", f"killed by the out-of-memory killer{at} ({ending})\n{log_tail}"
        )
    if status == EXIT_INVALID_INPUT and signal is None:
        return ExecutionFailed("invalid_input", log_tail)
    if _looks_out_of_memory(log_tail):
        return ExecutionFailed("out_of_memory", f"{ending}\n{log_tail}")
    return ExecutionFailed("crash", f"{ending}\n{log_tail}")
