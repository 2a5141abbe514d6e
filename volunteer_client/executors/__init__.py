"""Executors: where and how the trainer runs (``process`` now; ``docker``/``vm`` later)."""

from __future__ import annotations

from .base import (
    EXECUTOR_NAMES,
    ExecutionRequest,
    ExecutionResult,
    Executor,
    get_executor,
    register_executor,
)
from .process import ProcessExecutor

__all__ = [
    "EXECUTOR_NAMES",
    "ExecutionRequest",
    "ExecutionResult",
    "Executor",
    "ProcessExecutor",
    "get_executor",
    "register_executor",
]
