"""YADML volunteer client: attach to a work server, train work units, upload the results.

Public surface: :class:`ServerAPI` (the HTTP API), :class:`StateDir` (local state),
:class:`Daemon` (the work loop), the executors and the exception hierarchy of
:mod:`volunteer_client.errors`. The command line is ``yadml-client`` (:mod:`.cli`).

The names are imported lazily, so that importing one submodule (``yadml-client --help``,
the executor table, a test of one module) does not pull in every dependency: a volunteer
who runs only Docker units has no torch, and the Docker SDK is needed by one executor.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import ServerAPI
    from .daemon import Daemon
    from .daemon.retry import Backoff
    from .errors import (
        ExecutionFailed,
        Forbidden,
        IntegrityError,
        NotAttached,
        PayloadRejected,
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
    )
    from .state import Attachment, StateDir, UnitRecord, default_state_dir

_EXPORTS = {
    "ServerAPI": "api",
    "Backoff": "daemon.retry",
    "Daemon": "daemon",
    "ExecutionFailed": "errors",
    "Forbidden": "errors",
    "IntegrityError": "errors",
    "NotAttached": "errors",
    "PayloadRejected": "errors",
    "PermanentError": "errors",
    "ProtocolError": "errors",
    "Rejected": "errors",
    "StateError": "errors",
    "StateLocked": "errors",
    "TransientError": "errors",
    "Unauthorized": "errors",
    "YadmlClientError": "errors",
    "ExecutionRequest": "executors",
    "ExecutionResult": "executors",
    "Executor": "executors",
    "ProcessExecutor": "executors",
    "Attachment": "state",
    "StateDir": "state",
    "UnitRecord": "state",
    "default_state_dir": "state",
}

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
    "PayloadRejected",
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
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
