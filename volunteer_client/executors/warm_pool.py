"""The warm pool: long-lived trainers (:mod:`yadml_trainer.loop`) that take unit after unit.

The process executor's and the Docker executor's warm modes are this pool with another
:class:`~.worker_launcher.WorkerLauncher` (a child process, :mod:`.process_workers`; a
container, :mod:`.docker_workers`). The interpreter start, ``import torch`` and the teardown
(about 1.9 s per unit, ``bench/executor_overhead.py``) are then paid once per worker, not
per unit.

* One worker per concurrent unit. A worker is reused only for units with the same
  :class:`~.worker_launcher.WorkerSpec` (thread count, image); an idle worker that died or
  has another spec is retired when a unit comes.
* Each worker has a spool directory; a unit gets ``SPOOL/u<n>-<unit>/`` holding what the
  launcher stages there and ``request.json`` (the trainer's arguments). The directory is
  built beside the spool and renamed in when complete, so the loop never sees a half-made one.
  The loop answers with ``log`` and, last, ``exit`` (:mod:`yadml_trainer.spool`).
* The trainer's exit status 0 or 2 keeps the worker; any other status retires it, so the next
  unit starts from a fresh interpreter. A worker that dies fails its unit (``crash``, or
  ``out_of_memory``, :func:`~.base.classify_exit`); past the time limit or on cancellation it
  is stopped. Either way the next unit starts a new one.
* Spools a killed earlier client left in the spool directory are removed on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from yadml_trainer.exit_status import EXIT_ERROR, EXIT_INVALID_INPUT, EXIT_OK
from yadml_trainer.spool import EXIT, LOG, READY, REQUEST, STOP

from ..errors import ExecutionFailed
from .base import ExecutionRequest, ExecutionResult, classify_exit
from .trainer_files import read_small, read_tail, relay_progress, tail_text
from .worker_launcher import WorkerLauncher, WorkerSpec

__all__ = ["POLL_S", "WarmPool"]

#: How often a running unit's ``exit`` file is looked at.
POLL_S = 0.02

Handle = TypeVar("Handle")


@dataclass(eq=False)
class _Worker(Generic[Handle]):
    handle: Handle
    spool: Path
    spec: WorkerSpec
    busy: bool = True
    units: int = 0


class WarmPool(Generic[Handle]):
    """The warm workers of one executor; see the module docstring.

    ``spool_dir``: where the workers' spools live (default: a temporary directory)."""

    def __init__(self, *, launcher: WorkerLauncher[Handle], spool_dir: Path | None) -> None:
        self.launcher = launcher
        self.spool_dir = spool_dir
        self._workers: list[_Worker[Handle]] = []
        self._lock = asyncio.Lock()
        self._cleaned = False

    def handles(self) -> list[Handle]:
        """The workers the pool holds (busy or idle)."""
        return [w.handle for w in self._workers]

    async def run(self, request: ExecutionRequest, spec: WorkerSpec) -> ExecutionResult:
        """Run one unit on a warm worker; raises ``ExecutionFailed`` as the module says."""
        started = time.monotonic()
        deadline = None if request.timeout_s is None else started + request.timeout_s
        worker = await self._acquire(spec, request, deadline)
        unit_name = f"u{worker.units:06d}-{request.work_dir.name}"
        worker.units += 1
        unit_dir = worker.spool / unit_name
        keep = False
        try:
            await asyncio.to_thread(self._stage, worker, request, unit_name)
            status = await self._wait_with_progress(worker, request, unit_dir, deadline)
            log = read_tail(unit_dir / LOG)
            if status is None:
                raise await self._no_status(worker, request, log)
            keep = status in (EXIT_OK, EXIT_INVALID_INPUT)
            written = status == EXIT_OK and await asyncio.to_thread(
                self.launcher.collect, request, unit_dir
            )
            failure = classify_exit(
                status,
                log_tail=log,
                output_written=written,
                memory_limit_mb=self.launcher.memory_limit_mb,
            )
            if failure is not None:
                raise failure
            return ExecutionResult(
                output_path=request.output_path,
                elapsed_s=time.monotonic() - started,
                log_tail=log,
            )
        finally:
            shutil.rmtree(unit_dir, ignore_errors=True)
            if keep:
                worker.busy = False
            else:  # cancelled, timed out, died, or the trainer failed: a fresh one next
                await self._discard(worker)

    async def aclose(self) -> None:
        """Stop every worker (an idle loop ends on its own at ``stop``) and remove spools."""
        workers, self._workers = self._workers, []
        for worker in workers:
            with contextlib.suppress(OSError):
                (worker.spool / STOP).touch()
        for worker in workers:
            await asyncio.shield(self.launcher.stop(worker.handle))
            shutil.rmtree(worker.spool, ignore_errors=True)

    # ------------------------------------------------------------------ workers

    def _spool_root(self) -> Path:
        if self.spool_dir is None:
            self.spool_dir = Path(tempfile.mkdtemp(prefix=self.launcher.spool_prefix))
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        if not self._cleaned:
            self._cleaned = True
            for leftover in self.spool_dir.iterdir():  # a killed client's: its loops end
                with contextlib.suppress(OSError):
                    (leftover / STOP).touch()
                shutil.rmtree(leftover, ignore_errors=True)
        return self.spool_dir

    async def _acquire(
        self, spec: WorkerSpec, request: ExecutionRequest, deadline: float | None
    ) -> _Worker[Handle]:
        while True:
            worker, spool = await self._reuse(spec)
            if worker is None:
                return await self._spawn(spool, spec, request, deadline)
            if await self.launcher.alive(worker.handle):
                return worker
            await self._discard(worker)  # died while idle: look again

    async def _reuse(self, spec: WorkerSpec) -> tuple[_Worker[Handle] | None, Path]:
        """An idle worker started with ``spec`` (marked busy), or the spool of a new one.
        Idle workers with another spec (thread count, image) are retired."""
        async with self._lock:
            chosen: _Worker[Handle] | None = None
            retired: list[_Worker[Handle]] = []
            for worker in list(self._workers):
                if worker.busy:
                    continue
                if chosen is None and worker.spec == spec:
                    chosen = worker
                    chosen.busy = True
                elif worker.spec != spec:  # another thread count or image: not needed now
                    self._workers.remove(worker)
                    retired.append(worker)
            spool = self._spool_root() / f"w-{uuid.uuid4().hex[:12]}"
            if chosen is None:
                self.launcher.make_dir(spool)
        for worker in retired:
            await self._discard(worker)
        return chosen, spool

    async def _spawn(
        self, spool: Path, spec: WorkerSpec, request: ExecutionRequest, deadline: float | None
    ) -> _Worker[Handle]:
        try:
            handle = await self.launcher.start(spool, spec)
        except BaseException:
            shutil.rmtree(spool, ignore_errors=True)
            raise
        worker = _Worker(handle=handle, spool=spool, spec=spec)
        self._workers.append(worker)  # no await since the start: never lost
        try:
            await self._wait_ready(worker, request, deadline)
        except BaseException:
            await self._discard(worker)
            raise
        return worker

    async def _wait_ready(
        self, worker: _Worker[Handle], request: ExecutionRequest, deadline: float | None
    ) -> None:
        checked = time.monotonic()
        while not (worker.spool / READY).exists():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                report = await self.launcher.report(worker.handle)
                failure = classify_exit(
                    None,
                    timed_out=True,
                    time_limit_s=request.timeout_s,
                    log_tail=f"the warm trainer was not ready yet\n{report.output}",
                )
                assert failure is not None
                raise failure
            if now - checked >= self.launcher.liveness_interval_s:
                checked = now
                if not await self.launcher.alive(worker.handle):
                    raise await self._died(worker, "exited while starting", "")
            await asyncio.sleep(POLL_S)

    async def _discard(self, worker: _Worker[Handle]) -> None:
        """Stop the worker and remove its spool."""
        if worker in self._workers:
            self._workers.remove(worker)
        await asyncio.shield(self.launcher.stop(worker.handle))
        shutil.rmtree(worker.spool, ignore_errors=True)

    async def _died(self, worker: _Worker[Handle], what: str, log: str) -> ExecutionFailed:
        report = await self.launcher.report(worker.handle)
        context = f"the warm trainer {what}"
        if report.signal is None and report.exit_status is not None:
            context += f" with exit status {report.exit_status}"
        failure = classify_exit(
            None,
            signal=report.signal,
            oom_killed=report.oom_killed,
            memory_limit_mb=self.launcher.memory_limit_mb,
            log_tail=tail_text(log + report.output),
            context=context,
        )
        assert failure is not None
        return failure

    # ------------------------------------------------------------------ one unit

    def _stage(self, worker: _Worker[Handle], request: ExecutionRequest, unit_name: str) -> None:
        # Built outside the spool, moved in whole: the loop must never see a half-made unit
        # (or, for a container, files whose owner and permissions are not set yet).
        staging = worker.spool.parent / f".staging-{worker.spool.name}-{unit_name}"
        try:
            self.launcher.make_dir(staging)
            seen_as = f"{self.launcher.seen_as(worker.spool)}/{unit_name}"
            args = self.launcher.stage(request, staging, seen_as)
            (staging / REQUEST).write_text(json.dumps(args), encoding="utf-8")
            self.launcher.hand_over(staging)
            _move_dir(staging, worker.spool / unit_name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    async def _wait_with_progress(
        self,
        worker: _Worker[Handle],
        request: ExecutionRequest,
        unit_dir: Path,
        deadline: float | None,
    ) -> int | None:
        source = self.launcher.progress_file(unit_dir)
        if source is None or request.progress_path is None:
            return await self._wait_exit(worker, unit_dir / EXIT, deadline)
        relay = asyncio.create_task(relay_progress(source, request.progress_path))
        try:
            return await self._wait_exit(worker, unit_dir / EXIT, deadline)
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay

    async def _wait_exit(
        self, worker: _Worker[Handle], exit_path: Path, deadline: float | None
    ) -> int | None:
        """The unit's exit status; None if the worker died or the deadline passed."""
        checked = time.monotonic()
        while True:
            status = _read_status(exit_path)
            if status is not None:
                return status
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            if now - checked >= self.launcher.liveness_interval_s:
                checked = now
                if not await self.launcher.alive(worker.handle):
                    return _read_status(exit_path)  # it may have answered just before dying
            await asyncio.sleep(POLL_S)

    async def _no_status(
        self, worker: _Worker[Handle], request: ExecutionRequest, log: str
    ) -> ExecutionFailed:
        if await self.launcher.alive(worker.handle):  # the time ran out
            failure = classify_exit(
                None, timed_out=True, time_limit_s=request.timeout_s, log_tail=log
            )
            assert failure is not None
            return failure
        return await self._died(worker, "died", log)


def _read_status(path: Path) -> int | None:
    text = read_small(path, 32)
    if text is None or not text.strip():
        return None
    try:
        return int(text.strip())
    except ValueError:
        return EXIT_ERROR


def _move_dir(src: Path, dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    src.replace(dest)
