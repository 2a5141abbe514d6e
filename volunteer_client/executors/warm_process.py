"""Warm mode of the process executor: a long-lived trainer process takes unit after unit.

``ProcessExecutor(warm=True)`` keeps one child running :mod:`yadml_trainer.loop`
per concurrent unit, with the protocol of the Docker executor's warm containers: a spool
directory per process, one sub-directory per unit whose ``request.json`` (the trainer's
arguments) is written last and atomically, and an ``exit`` file the loop writes when the
unit is over. The interpreter start, ``import torch`` and the interpreter teardown (about
1.9 s per unit, ``bench/executor_overhead.py``) are then paid once per process, not once per
unit. The loop runs as the client's own user on the same file system, so a unit's files are
passed by path, never copied; the trainer writes the output and progress files in place.

Failures:

* the trainer's own exit status (0 ok, 2 ``invalid_input``) leaves the process running; any
  other status (an error inside the trainer) retires the process, so the next unit starts
  from a fresh interpreter;
* a process that dies (killed, out of memory) fails its unit as ``crash`` (or
  ``out_of_memory`` when the log says so) and is replaced on the next unit;
* past the time limit, or when the unit is cancelled, the process group is killed (SIGTERM,
  then SIGKILL after the grace period) and replaced on the next unit.

A loop whose client died exits on its own: on Linux it gets SIGKILL with its parent
(``PR_SET_PDEATHSIG``), and anywhere its spool going away ends it (the next client removes
leftover spools when it starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExecutionFailed

__all__ = ["DEFAULT_LOOP_MODULE", "WarmTrainers"]

DEFAULT_LOOP_MODULE = "yadml_trainer.loop"
#: How often a running unit's ``exit`` file (and the process) is looked at.
POLL_S = 0.02
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGKILL this process when the process that started it exits."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _read_tail(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


@dataclass
class _Worker:
    """One warm trainer process and its spool directory."""

    proc: asyncio.subprocess.Process
    spool: Path
    threads: int | None
    log: asyncio.Task[None]
    output: bytearray
    busy: bool = False
    units: int = 0

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None


class WarmTrainers:
    """The warm trainer processes of one :class:`~.process.ProcessExecutor`.

    ``command(spool)`` is the loop's command line, ``environment(threads)`` its environment,
    ``spool_dir`` where spools live (default: a temporary directory; leftovers of an earlier
    client found there are removed on first use).
    """

    def __init__(
        self,
        *,
        command: Callable[[Path], list[str]],
        environment: Callable[[int | None], Mapping[str, str]],
        spool_dir: Path | None,
        kill_grace_s: float,
        log_tail_bytes: int,
    ) -> None:
        self._command = command
        self._environment = environment
        self.spool_dir = spool_dir
        self.kill_grace_s = kill_grace_s
        self.log_tail_bytes = log_tail_bytes
        self._workers: list[_Worker] = []
        self._lock = asyncio.Lock()
        self._cleaned = False

    def pids(self) -> list[int]:
        """The process ids of the running warm trainers."""
        return [w.proc.pid for w in self._workers if w.alive]

    # ------------------------------------------------------------------ processes

    def _spool_root(self) -> Path:
        if self.spool_dir is None:
            self.spool_dir = Path(tempfile.mkdtemp(prefix="yadml-warm-"))
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        if not self._cleaned:
            self._cleaned = True
            for leftover in self.spool_dir.iterdir():  # a killed client's: their loops end
                with contextlib.suppress(OSError):
                    (leftover / "stop").touch()
                shutil.rmtree(leftover, ignore_errors=True)
        return self.spool_dir

    async def _spawn(self, threads: int | None) -> _Worker:
        spool = self._spool_root() / f"w-{uuid.uuid4().hex[:12]}"
        spool.mkdir(mode=0o700)
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._command(spool),
                cwd=spool,
                env=dict(self._environment(threads)),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            shutil.rmtree(spool, ignore_errors=True)
            raise ExecutionFailed("executor_error", f"cannot start the trainer: {exc}") from exc
        output = bytearray()
        assert proc.stdout is not None
        worker = _Worker(
            proc=proc,
            spool=spool,
            threads=threads,
            log=asyncio.create_task(self._drain(proc.stdout, output)),
            output=output,
            busy=True,
        )
        self._workers.append(worker)  # no await since the start: never lost
        return worker

    async def _wait_ready(self, worker: _Worker, deadline: float | None) -> None:
        """Wait for the loop's ``ready`` file; on failure (or cancellation) retire it."""
        try:
            while not (worker.spool / "ready").exists():
                if not worker.alive or (deadline is not None and time.monotonic() >= deadline):
                    timed_out = worker.alive
                    await self._discard(worker)
                    text = worker.output.decode("utf-8", "replace")
                    if timed_out:
                        raise ExecutionFailed(
                            "timeout", f"the trainer was not ready within the time limit\n{text}"
                        )
                    raise ExecutionFailed(
                        "crash",
                        f"the trainer exited while starting ({self._status(worker)})\n{text}",
                    )
                await asyncio.sleep(POLL_S)
        except BaseException:
            if worker in self._workers:
                await self._discard(worker)
            raise

    async def _drain(self, stream: asyncio.StreamReader, into: bytearray) -> None:
        while chunk := await stream.read(1 << 14):
            into += chunk
            if len(into) > self.log_tail_bytes:
                del into[: len(into) - self.log_tail_bytes]

    async def _acquire(self, threads: int | None, deadline: float | None) -> _Worker:
        async with self._lock:
            for worker in list(self._workers):
                if worker.busy:
                    continue
                if worker.alive and worker.threads == threads:
                    worker.busy = True
                    return worker
                await self._discard(worker)  # dead while idle, or another thread count
            worker = await self._spawn(threads)
        await self._wait_ready(worker, deadline)
        return worker

    async def _discard(self, worker: _Worker) -> None:
        """Stop the process (its whole group) and remove its spool."""
        if worker in self._workers:
            self._workers.remove(worker)
        await asyncio.shield(self._kill(worker))
        shutil.rmtree(worker.spool, ignore_errors=True)

    async def _kill(self, worker: _Worker) -> None:
        pgid = worker.proc.pid
        if worker.alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.proc.wait(), timeout=self.kill_grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        await worker.proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(worker.log), timeout=1.0)
        worker.log.cancel()

    @staticmethod
    def _status(worker: _Worker) -> str:
        code = worker.proc.returncode
        if code is not None and code < 0:
            sig = -code
            return f"killed by {signal.Signals(sig).name if sig in signal.valid_signals() else sig}"
        return f"exit status {code}"

    async def aclose(self) -> None:
        """Stop every warm trainer (asks politely first: ``stop`` ends an idle loop)."""
        workers, self._workers = self._workers, []
        for worker in workers:
            with contextlib.suppress(OSError):
                (worker.spool / "stop").touch()
        for worker in workers:
            if worker.alive:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(worker.proc.wait(), timeout=0.5)
            await self._kill(worker)
            shutil.rmtree(worker.spool, ignore_errors=True)

    # ------------------------------------------------------------------ one unit

    async def run(self, args: list[str], *, name: str, timeout_s: float | None) -> tuple[int, str]:
        """Run the trainer with ``args`` in a warm process: ``(exit status, log tail)``.

        Raises ``ExecutionFailed`` (``timeout``, ``crash``, ``executor_error``) when the
        process did not report an exit status.
        """
        started = time.monotonic()
        deadline = None if timeout_s is None else started + timeout_s
        worker = await self._acquire(args_threads(args), deadline)
        unit_dir = worker.spool / f"u{worker.units:06d}-{name}"
        worker.units += 1
        keep = False
        try:
            unit_dir.mkdir()
            tmp = unit_dir / ".request.json.tmp"
            tmp.write_text(json.dumps(args), encoding="utf-8")
            os.replace(tmp, unit_dir / "request.json")  # the loop takes it from here
            code = await self._wait_exit(worker, unit_dir / "exit", deadline)
            log_tail = _read_tail(unit_dir / "log", self.log_tail_bytes)
            if code is None and worker.alive:
                await self._discard(worker)
                raise ExecutionFailed(
                    "timeout", f"killed after the time limit of {timeout_s or 0:.1f} s\n{log_tail}"
                )
            if code is None:
                await self._discard(worker)
                text = log_tail + worker.output.decode("utf-8", "replace")
                raise ExecutionFailed(
                    "crash", f"the warm trainer process died ({self._status(worker)})\n{text}"
                )
            keep = code in (0, 2)
            return code, log_tail
        finally:
            shutil.rmtree(unit_dir, ignore_errors=True)
            if keep:
                worker.busy = False
            elif worker in self._workers:  # cancelled, or the trainer failed: a fresh one next
                await self._discard(worker)

    @staticmethod
    async def _wait_exit(worker: _Worker, exit_path: Path, deadline: float | None) -> int | None:
        """The unit's exit status; None if the process died or the deadline passed."""
        while True:
            with contextlib.suppress(OSError, ValueError):
                return int(exit_path.read_text().strip())
            if not worker.alive:
                # it may have written the status just before dying
                with contextlib.suppress(OSError, ValueError):
                    return int(exit_path.read_text().strip())
                return None
            if deadline is not None and time.monotonic() >= deadline:
                return None
            await asyncio.sleep(POLL_S)


def args_threads(args: list[str]) -> int | None:
    """The ``--threads`` value in trainer arguments (None when absent)."""
    with contextlib.suppress(ValueError, IndexError):
        return int(args[args.index("--threads") + 1])
    return None
