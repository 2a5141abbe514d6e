"""``ProcessExecutor``: the trainer as a child process of this Python, in its own session.

Runs ``python -m yadml_trainer.trainer --shard S --weights W --task task.json
--output out [--threads N] [--progress FILE]`` in ``work_dir`` with a time limit. The
child leads a new process group, so a time limit or a cancellation kills everything it
started. Exit status: 0 ok, 2 ``invalid_input``, anything else (or a signal) ``crash``
(``out_of_memory`` when the log says so). stdout and stderr are merged; the last 4 KiB
are kept as the log tail.

``warm=True`` keeps a trainer process running :mod:`yadml_trainer.loop` between
units instead (:mod:`.warm_process`): the interpreter start, ``import torch`` and the
teardown are paid once per process rather than once per unit. Exit statuses mean the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import ExecutionFailed
from .base import ExecutionRequest, ExecutionResult, Executor
from .warm_process import DEFAULT_LOOP_MODULE, WarmTrainers

__all__ = ["DEFAULT_TRAINER_MODULE", "LOG_TAIL_BYTES", "ProcessExecutor"]

DEFAULT_TRAINER_MODULE = "yadml_trainer.trainer"
LOG_TAIL_BYTES = 4096

_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
_OOM_MARKERS = ("MemoryError", "out of memory", "Cannot allocate memory")

#: The directory that holds the ``volunteer_client`` package, so ``-m`` finds the trainer
#: from a source checkout too.
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


class _Tail:
    """The last ``limit`` bytes of a stream."""

    def __init__(self, limit: int = LOG_TAIL_BYTES) -> None:
        self.limit = limit
        self.data = bytearray()

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(1 << 14):
            self.data += chunk
            if len(self.data) > self.limit:
                del self.data[: len(self.data) - self.limit]

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


class ProcessExecutor(Executor):
    """Run the trainer module in a child process.

    ``module`` is the module run with ``-m`` (tests pass a stand-in), ``python`` the
    interpreter, ``pythonpath`` extra import roots, ``env`` extra environment variables,
    ``kill_grace_s`` how long SIGTERM is given before SIGKILL. ``warm``: keep a trainer
    process between units (``loop_module`` runs it; its spools live in ``spool_dir``,
    default a temporary directory).
    """

    runtime = "process"

    def __init__(
        self,
        *,
        module: str = DEFAULT_TRAINER_MODULE,
        python: str = sys.executable,
        pythonpath: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        kill_grace_s: float = 2.0,
        warm: bool = False,
        spool_dir: Path | None = None,
        loop_module: str = DEFAULT_LOOP_MODULE,
    ) -> None:
        self.module = module
        self.python = python
        self.pythonpath = list(pythonpath)
        self.extra_env = dict(env or {})
        self.kill_grace_s = kill_grace_s
        self.warm = warm
        self.loop_module = loop_module
        self.warm_trainers = WarmTrainers(
            command=lambda spool: [self.python, "-m", self.loop_module, str(spool)],
            environment=self._environment,
            spool_dir=spool_dir,
            kill_grace_s=kill_grace_s,
            log_tail_bytes=LOG_TAIL_BYTES,
        )

    def command(self, request: ExecutionRequest, task_path: Path) -> list[str]:
        return [self.python, "-m", self.module, *self.trainer_args(request, task_path)]

    @staticmethod
    def trainer_args(request: ExecutionRequest, task_path: Path) -> list[str]:
        cmd = [
            "--shard",
            str(request.shard_path),
            "--weights",
            str(request.weights_path),
            "--task",
            str(task_path),
            "--output",
            str(request.output_path),
        ]
        if request.threads is not None:
            cmd += ["--threads", str(request.threads)]
        if request.progress_path is not None:
            cmd += ["--progress", str(request.progress_path)]
        return cmd

    def environment(self, request: ExecutionRequest) -> dict[str, str]:
        return self._environment(request.threads)

    def _environment(self, threads: int | None) -> dict[str, str]:
        env = dict(os.environ)
        paths = [*self.pythonpath, _PACKAGE_PARENT]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        if threads is not None:
            for name in _THREAD_VARS:
                env[name] = str(threads)
        env.update(self.extra_env)
        return env

    async def run(self, request: ExecutionRequest) -> ExecutionResult:
        request.work_dir.mkdir(parents=True, exist_ok=True)
        task_path = request.work_dir / "task.json"
        task_path.write_text(request.task.model_dump_json(indent=2))
        request.output_path.unlink(missing_ok=True)
        started = time.monotonic()
        if self.warm:
            code, log_tail = await self.warm_trainers.run(
                self.trainer_args(request, task_path),
                name=request.work_dir.name,
                timeout_s=request.timeout_s,
            )
            return _outcome(request, code, log_tail, started)
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command(request, task_path),
                cwd=request.work_dir,
                env=self.environment(request),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise ExecutionFailed("executor_error", f"cannot start {self.python}: {exc}") from exc
        assert proc.stdout is not None
        tail = _Tail()
        reader = asyncio.create_task(tail.drain(proc.stdout))
        try:
            try:
                await asyncio.wait_for(proc.wait(), timeout=request.timeout_s)
            except TimeoutError:
                await self._kill_group(proc)
                await self._finish_reader(reader)
                raise ExecutionFailed(
                    "timeout",
                    f"killed after the time limit of {request.timeout_s:.1f} s\n{tail.text()}",
                ) from None
            await self._finish_reader(reader)
        finally:
            # Cancellation (or any error) while the child runs: kill its whole group.
            if proc.returncode is None:
                await asyncio.shield(self._kill_group(proc))
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        return _outcome(request, proc.returncode, tail.text(), started)

    async def aclose(self) -> None:
        """Stop the warm trainer processes."""
        await self.warm_trainers.aclose()

    async def _finish_reader(self, reader: asyncio.Task[None]) -> None:
        # The pipe closes when the last process holding it exits; grandchildren may keep
        # it open, so give up after a moment rather than wait for them.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reader), timeout=1.0)

    async def _kill_group(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM the child's process group, SIGKILL it after the grace period."""
        self._signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=self.kill_grace_s)
        # Whatever is left of the group (the child or its children) goes now.
        self._signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def _outcome(
    request: ExecutionRequest, code: int | None, log_tail: str, started: float
) -> ExecutionResult:
    """The trainer's exit status as a result, or the ``ExecutionFailed`` it means."""
    if code == 0:
        if not request.output_path.is_file():
            raise ExecutionFailed("crash", f"exit 0 but no output file\n{log_tail}")
        return ExecutionResult(
            output_path=request.output_path,
            elapsed_s=time.monotonic() - started,
            log_tail=log_tail,
        )
    if code == 2:
        raise ExecutionFailed("invalid_input", log_tail)
    if any(marker in log_tail for marker in _OOM_MARKERS):
        raise ExecutionFailed("out_of_memory", f"exit status {code}\n{log_tail}")
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        raise ExecutionFailed("crash", f"killed by {name}\n{log_tail}")
    raise ExecutionFailed("crash", f"exit status {code}\n{log_tail}")
