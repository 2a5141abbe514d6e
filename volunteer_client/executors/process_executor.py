"""``ProcessExecutor``: the trainer as a child process of this Python, in its own session.

Runs ``python -m yadml_trainer.trainer --shard S --weights W --task task.json
--output out [--threads N] [--progress FILE]`` in ``work_dir`` with a time limit. The
child leads a new process group, so a time limit or a cancellation kills everything it
started. stdout and stderr are merged; the last 4 KiB are kept as the log tail. How the run
ended becomes a failure reason in :func:`~.base.classify_exit`.

``ProcessOptions(warm=True)`` keeps a trainer process running :mod:`yadml_trainer.loop`
between units instead (:class:`~.warm_pool.WarmPool` with :class:`~.process_workers.
ProcessLauncher`): the interpreter start, ``import torch`` and the teardown are paid once per
process rather than once per unit. Exit statuses mean the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExecutionFailed
from .base import ExecutionRequest, ExecutionResult, Executor, classify_exit
from .process_workers import ProcessLauncher, TrainerProcess, kill_group
from .trainer_files import THREAD_VARS, TailBuffer, host_trainer_args, write_task
from .warm_pool import WarmPool
from .worker_launcher import WorkerSpec

__all__ = [
    "DEFAULT_LOOP_MODULE",
    "DEFAULT_TRAINER_MODULE",
    "ProcessExecutor",
    "ProcessOptions",
]

DEFAULT_TRAINER_MODULE = "yadml_trainer.trainer"
DEFAULT_LOOP_MODULE = "yadml_trainer.loop"

#: The directory that holds the ``volunteer_client`` package, so ``-m`` finds the trainer
#: from a source checkout too.
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


@dataclass(frozen=True)
class ProcessOptions:
    """The volunteer's choices for the process executor.

    ``warm``: keep a trainer process between units; ``spool_dir``: where the warm processes'
    spools live (default: a temporary directory); ``kill_grace_s``: how long SIGTERM is given
    before SIGKILL."""

    warm: bool = False
    spool_dir: Path | None = None
    kill_grace_s: float = 2.0


class ProcessExecutor(Executor):
    """Run the trainer module in a child process.

    ``module`` is the module run with ``-m`` (tests pass a stand-in), ``loop_module`` the warm
    loop's, ``python`` the interpreter, ``pythonpath`` extra import roots, ``env`` extra
    environment variables.
    """

    runtime = "process"

    def __init__(
        self,
        options: ProcessOptions | None = None,
        *,
        module: str = DEFAULT_TRAINER_MODULE,
        loop_module: str = DEFAULT_LOOP_MODULE,
        python: str = sys.executable,
        pythonpath: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.options = options or ProcessOptions()
        self.module = module
        self.loop_module = loop_module
        self.python = python
        self.pythonpath = list(pythonpath)
        self.extra_env = dict(env or {})
        self.warm_pool: WarmPool[TrainerProcess] = WarmPool(
            launcher=ProcessLauncher(
                command=lambda spool: [self.python, "-m", self.loop_module, str(spool)],
                environment=self._environment,
                kill_grace_s=self.options.kill_grace_s,
            ),
            spool_dir=self.options.spool_dir,
        )

    def warm_pids(self) -> list[int]:
        """The process ids of the running warm trainers."""
        return [worker.pid for worker in self.warm_pool.handles() if worker.alive]

    def command(self, request: ExecutionRequest, task_path: Path) -> list[str]:
        return [self.python, "-m", self.module, *host_trainer_args(request, task_path)]

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
            for name in THREAD_VARS:
                env[name] = str(threads)
        env.update(self.extra_env)
        return env

    async def run(self, request: ExecutionRequest) -> ExecutionResult:
        request.work_dir.mkdir(parents=True, exist_ok=True)
        request.output_path.unlink(missing_ok=True)
        if self.options.warm:
            return await self.warm_pool.run(request, WorkerSpec(threads=request.threads))
        return await self._run_cold(request)

    async def aclose(self) -> None:
        """Stop the warm trainer processes."""
        await self.warm_pool.aclose()

    async def _run_cold(self, request: ExecutionRequest) -> ExecutionResult:
        task_path = write_task(request, request.work_dir)
        started = time.monotonic()
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
        tail = TailBuffer()
        reader = asyncio.create_task(tail.drain(proc.stdout))
        timed_out = False
        try:
            try:
                await asyncio.wait_for(proc.wait(), timeout=request.timeout_s)
            except TimeoutError:
                timed_out = True
                await kill_group(proc, self.options.kill_grace_s)
            await _finish_reader(reader)
        finally:
            # Cancellation (or any error) while the child runs: kill its whole group.
            if proc.returncode is None:
                await asyncio.shield(kill_group(proc, self.options.kill_grace_s))
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        code = proc.returncode
        failure = classify_exit(
            None if code is None or code < 0 else code,
            signal=-code if code is not None and code < 0 else None,
            timed_out=timed_out,
            time_limit_s=request.timeout_s,
            output_written=request.output_path.is_file(),
            log_tail=tail.text(),
        )
        if failure is not None:
            raise failure
        return ExecutionResult(
            output_path=request.output_path,
            elapsed_s=time.monotonic() - started,
            log_tail=tail.text(),
        )


async def _finish_reader(reader: asyncio.Task[None]) -> None:
    # The pipe closes when the last process holding it exits; grandchildren may keep it
    # open, so give up after a moment rather than wait for them.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(reader), timeout=1.0)
