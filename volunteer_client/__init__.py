"""YADML volunteer client: attach to a work server, train work units, upload the results.

Public surface: :class:`ServerAPI` (the HTTP API), :class:`StateDir` (local state),
:class:`Daemon` (the work loop), the executors and the exception hierarchy of
:mod:`volunteer_client.errors`. The command line is ``yadml-client`` (:mod:`.cli`).
"""

from __future__ import annotations

from .api import ServerAPI
from .daemon import Backoff, Daemon
from .errors import (
    ExecutionFailed,
    Forbidden,
    IntegrityError,
    NotAttached,
    PermanentError,
    ProtocolError,
    Rejected,
    StateError,
    StateLocked,
    TransientError,
    Unauthorized,
    YadmlClientError,
)
from .executors import (
    ExecutionRequest,
    ExecutionResult,
    Executor,
    ProcessExecutor,
    get_executor,
)
from .state import Attachment, StateDir, UnitRecord, default_state_dir

__all__ = [
    "Attachment",
    "Backoff",
    "Daemon",
    "ExecutionFailed",
    "ExecutionRequest",
    "ExecutionResult",
    "Executor",
    "Forbidden",
    "IntegrityError",
    "NotAttached",
    "PermanentError",
    "ProcessExecutor",
    "ProtocolError",
    "Rejected",
    "ServerAPI",
    "StateDir",
    "StateError",
    "StateLocked",
    "TransientError",
    "Unauthorized",
    "UnitRecord",
    "YadmlClientError",
    "default_state_dir",
    "get_executor",
]
