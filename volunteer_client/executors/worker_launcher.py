"""How the warm pool (:mod:`.warm_pool`) starts its workers: the one thing that differs
between the process executor's warm trainers and the Docker executor's warm containers.

A :class:`WorkerLauncher` starts a worker running ``python -m yadml_trainer.loop SPOOL``,
tells whether it still runs, how it ended and stops it; and, since only it knows what the
worker can see, lays a unit's files out for it (:meth:`~WorkerLauncher.stage`) and takes the
output back (:meth:`~WorkerLauncher.collect`). Implementations:
:class:`~.process_workers.ProcessLauncher`, :class:`~.docker_workers.ContainerLauncher`.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from .base import ExecutionRequest

__all__ = ["WorkerLauncher", "WorkerReport", "WorkerSpec"]

Handle = TypeVar("Handle")


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker is started with; a unit only goes to a worker started alike."""

    threads: int | None
    #: the image a container runs (None for a process)
    image: str | None = None


@dataclass(frozen=True)
class WorkerReport:
    """A worker's state when it stopped answering, and the tail of its own output."""

    #: the worker's own exit status (not a trainer's), when it exited
    exit_status: int | None = None
    #: the signal that killed it
    signal: int | None = None
    #: the kernel's OOM killer struck it
    oom_killed: bool = False
    output: str = ""


class WorkerLauncher(ABC, Generic[Handle]):
    """Starts one kind of worker running the trainer loop on a spool directory, and lays a
    unit's files out where that worker can see them."""

    #: the temporary spool directory's name prefix, when none is configured
    spool_prefix = "yadml-warm-"
    #: how often a busy worker is asked whether it still runs (0: at every poll)
    liveness_interval_s = 0.0
    #: the worker's memory limit, for failure reports
    memory_limit_mb: int | None = None

    @abstractmethod
    async def start(self, spool: Path, spec: WorkerSpec) -> Handle:
        """Start a worker on ``spool`` (made by :meth:`make_dir`). Raises ``ExecutionFailed``
        (``executor_error``) when it cannot; if cancelled, leaves nothing running."""

    @abstractmethod
    async def alive(self, worker: Handle) -> bool:
        """Whether the worker still runs."""

    @abstractmethod
    async def report(self, worker: Handle) -> WorkerReport:
        """How the worker ended (or stands), for a failure report."""

    @abstractmethod
    async def stop(self, worker: Handle) -> None:
        """Stop the worker for good and release it. Never raises."""

    def make_dir(self, path: Path) -> None:
        """(Re)create ``path`` empty, writable by the worker only."""
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, mode=0o700)

    def seen_as(self, spool: Path) -> str:
        """The spool's path as the worker sees it."""
        return str(spool)

    @abstractmethod
    def stage(self, request: ExecutionRequest, unit_dir: Path, seen_as: str) -> list[str]:
        """Lay the unit's inputs out for the worker (``unit_dir`` is ``seen_as`` to it) and
        return the trainer's arguments. Blocking."""

    def hand_over(self, unit_dir: Path) -> None:
        """Make the staged files the worker's (ownership, permissions). Blocking."""

    def progress_file(self, unit_dir: Path) -> Path | None:
        """Where the trainer writes progress, when it is not the request's own file."""
        return None

    @abstractmethod
    def collect(self, request: ExecutionRequest, unit_dir: Path) -> bool:
        """After exit status 0: put the output at ``request.output_path``; False when the
        trainer left none. Blocking."""
