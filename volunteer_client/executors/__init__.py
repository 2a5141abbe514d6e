"""Executors: where and how the trainer runs (``process``, ``docker``; ``vm`` later)."""

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

__all__ = [
    "EXECUTOR_NAMES",
    "DockerExecutor",
    "ExecutionRequest",
    "ExecutionResult",
    "Executor",
    "ProcessExecutor",
    "get_executor",
    "register_executor",
]
