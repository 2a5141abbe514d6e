"""The trainer's exit statuses: the contract between the trainer and every executor.

An executor turns these (and the ways a process can die: a signal, the kernel's OOM killer,
a time limit) into a failure reason; the mapping is one pure function in
``volunteer_client.executors.base``.
"""

from __future__ import annotations

__all__ = ["EXIT_ERROR", "EXIT_INVALID_INPUT", "EXIT_OK", "InvalidInput"]

#: Trained and wrote the output.
EXIT_OK = 0
#: Any other error, e.g. the loss became non-finite.
EXIT_ERROR = 1
#: Unreadable, malformed or mismatched inputs, a bad task file or bad arguments: running the
#: same unit again elsewhere would fail the same way.
EXIT_INVALID_INPUT = 2


class InvalidInput(ValueError):
    """The trainer's inputs are malformed or do not fit together (exit status 2)."""
