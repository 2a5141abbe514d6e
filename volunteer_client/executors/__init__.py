"""Executors: where and how the trainer runs (``process``, ``docker``, ``vm``).

* :mod:`.base`: the :class:`Executor` interface, :class:`ExecutionRequest`,
  :class:`ExecutionResult`, and :func:`classify_exit` (how a run's end becomes a failure
  reason, for every executor);
* :mod:`.process_executor`, :mod:`.docker_executor`, :mod:`.vm`: the executors, each with its
  options (:class:`ProcessOptions`, :class:`DockerOptions`, :class:`VmOptions`);
* :mod:`.warm_pool`: long-lived trainers for the process and Docker executors' warm modes,
  started by :mod:`.process_workers` or :mod:`.docker_workers`;
* :mod:`.docker_container`: the Docker containers' hardening and the engine access;
* :mod:`.trainer_files`: the trainer's arguments, log tails, progress and output files;
* :mod:`.worker_image`: the worker image's name.

Which runtime gets which executor is decided by the client's composition root
(:mod:`volunteer_client.executor_table`), not here.
"""

from __future__ import annotations

from .base import ExecutionRequest, ExecutionResult, Executor, classify_exit
from .docker_container import DockerOptions
from .docker_executor import DockerExecutor
from .process_executor import ProcessExecutor, ProcessOptions
from .vm import VmExecutor, VmOptions

__all__ = [
    "DockerExecutor",
    "DockerOptions",
    "ExecutionRequest",
    "ExecutionResult",
    "Executor",
    "ProcessExecutor",
    "ProcessOptions",
    "VmExecutor",
    "VmOptions",
    "classify_exit",
]
