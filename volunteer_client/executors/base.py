"""The executor interface: run the trainer on one unit's files, somewhere isolated.

An executor has one method, ``async def run(request) -> ExecutionResult``. It raises
:class:`~volunteer_client.errors.ExecutionFailed` with a FailureReport reason
(``timeout``, ``crash``, ``invalid_input``, ``out_of_memory``, ``executor_error``,
``aborted``) when no output came out, and on cancellation stops whatever it started
before re-raising ``asyncio.CancelledError``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yadml_common.wire import Runtime, TaskConfig

__all__ = [
    "EXECUTOR_NAMES",
    "ExecutionRequest",
    "ExecutionResult",
    "Executor",
    "get_executor",
    "register_executor",
]


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

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Release what the executor keeps between units (e.g. warm containers)."""


#: Executors that will exist; only registered ones can be created.
EXECUTOR_NAMES = ("process", "docker", "vm")

_REGISTRY: dict[str, Callable[..., Executor]] = {}


def register_executor(name: str, factory: Callable[..., Executor]) -> None:
    _REGISTRY[name] = factory


def get_executor(name: str, **options: Any) -> Executor:
    """Create the executor called ``name`` with ``options`` (keyword arguments of its class)."""
    _load_builtin()
    factory = _REGISTRY.get(name)
    if factory is not None:
        return factory(**options)
    if name in EXECUTOR_NAMES:
        raise ValueError(
            f"executor {name!r} is not implemented yet (available: {', '.join(sorted(_REGISTRY))})"
        )
    raise ValueError(f"unknown executor {name!r} (available: {', '.join(sorted(_REGISTRY))})")


def _load_builtin() -> None:
    if "process" not in _REGISTRY:
        from .process import ProcessExecutor

        register_executor("process", ProcessExecutor)
    if "docker" not in _REGISTRY:
        from .docker import DockerExecutor

        register_executor("docker", DockerExecutor)
    if "vm" not in _REGISTRY:
        from .vm import VmExecutor

        register_executor("vm", VmExecutor)
