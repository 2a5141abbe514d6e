"""Which executor runs each runtime, and how ``yadml-client run``'s options configure it.

:data:`EXECUTORS` is the client's one static table from a wire ``Runtime`` to an
:class:`ExecutorEntry`: how to build the executor from the state directory and the ``run``
arguments (each executor's own options object), and, where it matters, how to tell whether
this computer can provide the runtime at all (asked when attaching, before advertising it).
The CLI reads the table; nothing registers into it.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

from yadml_common.wire import Runtime

from .executors import (
    DockerExecutor,
    DockerOptions,
    Executor,
    ProcessExecutor,
    ProcessOptions,
    VmExecutor,
    VmOptions,
)
from .executors.vm import probe_driver

__all__ = ["EXECUTORS", "ExecutorEntry", "build_executor", "client_id_for"]


def client_id_for(state_dir: Path) -> str:
    """A stable id for one client state directory: labels its containers, names its VMs."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ExecutorEntry:
    """How one runtime's executor is made.

    ``build(state_root, run_args)``: the executor; ``probe()``: None when the runtime needs
    nothing this computer may lack, else a function that returns a description of what will
    run it or raises ``ExecutionFailed`` (``executor_error``) saying why nothing can."""

    build: Callable[[Path, argparse.Namespace], Executor]
    probe: Callable[[], str] | None = None


def _process(state_root: Path, args: argparse.Namespace) -> Executor:
    return ProcessExecutor(ProcessOptions(warm=not args.cold, spool_dir=state_root / "warm"))


def _docker(state_root: Path, args: argparse.Namespace) -> Executor:
    return DockerExecutor(
        DockerOptions(
            image=args.docker_image,
            runtime=args.docker_runtime,
            memory_mb=args.memory_mb,
            cpus=args.cpus,
            pids_limit=args.pids_limit,
            warm=not args.cold,
            client_id=client_id_for(state_root),
            spool_dir=state_root / "docker",
        )
    )


def _vm(state_root: Path, args: argparse.Namespace) -> Executor:
    return VmExecutor(
        VmOptions(
            driver=args.vm_driver,
            client_id=client_id_for(state_root),
            image_dir=args.vm_image_dir,
            spool_dir=state_root / "vm",
            memory_mb=args.memory_mb,
            cpus=None if args.cpus is None else max(1, round(args.cpus)),
        )
    )


EXECUTORS: Final[Mapping[Runtime, ExecutorEntry]] = MappingProxyType(
    {
        "process": ExecutorEntry(build=_process),
        "docker": ExecutorEntry(build=_docker),
        "vm": ExecutorEntry(build=_vm, probe=probe_driver),
    }
)


def build_executor(runtime: Runtime, state_root: Path, args: argparse.Namespace) -> Executor:
    """The executor for ``runtime``, configured from ``yadml-client run``'s arguments."""
    return EXECUTORS[runtime].build(state_root, args)
