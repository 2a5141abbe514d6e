"""Executors: where and how the trainer runs (``process``, ``docker``, ``vm``)."""

from __future__ import annotations

from .base import (
    EXECUTOR_NAMES,
    ExecutionRequest,
    ExecutionResult,
    Executor,
    get_executor,
    register_executor,
)
from .docker import DockerExecutor
from .process import ProcessExecutor
from .vm import VmExecutor

__all__ = [
    "EXECUTOR_NAMES",
    "DockerExecutor",
    "ExecutionRequest",
    "ExecutionResult",
    "Executor",
    "ProcessExecutor",
    "VmExecutor",
    "get_executor",
    "register_executor",
]
