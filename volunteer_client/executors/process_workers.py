"""Trainer processes: killing a child's process group, and the warm pool's process workers.

:func:`kill_group` stops a child started in its own session and everything it started
(SIGTERM, then SIGKILL after a grace period); the process executor uses it for a unit's
trainer, :class:`ProcessLauncher` for a warm worker.

:class:`ProcessLauncher` starts ``python -m yadml_trainer.loop SPOOL`` as a child of this
client for :class:`~.warm_pool.WarmPool`. The loop runs as the client's own user on the same
file system, so a unit's files are passed by path, never copied; the trainer writes the
output and progress files in place.

A loop whose client died exits on its own: on Linux it gets SIGKILL with its parent
(``PR_SET_PDEATHSIG``), and anywhere its spool going away ends it (the next client removes
leftover spools when it starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ExecutionFailed
from .base import ExecutionRequest
from .trainer_files import TailBuffer, host_trainer_args, write_task
from .worker_launcher import WorkerLauncher, WorkerReport, WorkerSpec

__all__ = ["ProcessLauncher", "TrainerProcess", "kill_group"]

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGKILL this process when the process that started it exits."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def kill_group(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM the child's process group, SIGKILL it after ``grace_s``; wait for the child."""
    if proc.returncode is None:
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=grace_s)
    # Whatever is left of the group (the child or its children) goes now.
    _signal_group(proc.pid, signal.SIGKILL)
    await proc.wait()


@dataclass(eq=False)
class TrainerProcess:
    """One warm trainer process and the tail of its own output."""

    proc: asyncio.subprocess.Process
    output: TailBuffer
    drain: asyncio.Task[None] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None


class ProcessLauncher(WorkerLauncher[TrainerProcess]):
    """Warm trainer processes: ``command(spool)`` is the loop's command line,
    ``environment(threads)`` its environment, ``kill_grace_s`` the SIGTERM grace."""

    spool_prefix = "yadml-warm-"

    def __init__(
        self,
        *,
        command: Callable[[Path], list[str]],
        environment: Callable[[int | None], Mapping[str, str]],
        kill_grace_s: float,
    ) -> None:
        self._command = command
        self._environment = environment
        self.kill_grace_s = kill_grace_s

    async def start(self, spool: Path, spec: WorkerSpec) -> TrainerProcess:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._command(spool),
                cwd=spool,
                env=dict(self._environment(spec.threads)),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise ExecutionFailed("executor_error", f"cannot start the trainer: {exc}") from exc
        assert proc.stdout is not None
        output = TailBuffer()
        return TrainerProcess(
            proc=proc, output=output, drain=asyncio.create_task(output.drain(proc.stdout))
        )

    async def alive(self, worker: TrainerProcess) -> bool:
        return worker.alive

    async def report(self, worker: TrainerProcess) -> WorkerReport:
        if not worker.alive:  # its last words may still be in the pipe
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(worker.drain), timeout=1.0)
        code = worker.proc.returncode
        return WorkerReport(
            exit_status=code if code is not None and code >= 0 else None,
            signal=-code if code is not None and code < 0 else None,
            output=worker.output.text(),
        )

    async def stop(self, worker: TrainerProcess) -> None:
        await kill_group(worker.proc, self.kill_grace_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(worker.drain), timeout=1.0)
        worker.drain.cancel()

    def stage(self, request: ExecutionRequest, unit_dir: Path, seen_as: str) -> list[str]:
        return host_trainer_args(request, write_task(request, request.work_dir))

    def collect(self, request: ExecutionRequest, unit_dir: Path) -> bool:
        return request.output_path.is_file()
