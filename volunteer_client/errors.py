"""The volunteer client's exception hierarchy.

Everything the client raises on purpose derives from :class:`YadmlClientError`, in the
style of httpx: callers catch the class that matches what they can do about it.

::

    YadmlClientError
    ├── TransientError          try again later (server unreachable, 5xx, 429, garbled answer)
    │   └── ProtocolError       the server answered something that is not the wire model
    ├── PermanentError          retrying the same request will not help
    │   └── Rejected            any other 4xx answer: ``error``, ``detail`` from the body
    │       ├── Unauthorized    401: the host token is not valid (attach again)
    │       ├── Forbidden       403: the host is banned, or the result is not ours
    │       └── PayloadRejected 413/422: the body sent (an upload) is too large or invalid
    ├── IntegrityError          a downloaded blob does not match its sha256 (or size)
    ├── ExecutionFailed         an executor could not produce an output: ``reason``, ``detail``
    └── StateError              the local state directory is unusable
        ├── NotAttached         no ``attachment.json``: run ``yadml-client attach URL``
        └── StateLocked         another daemon holds the state directory

httpx exceptions never escape :mod:`volunteer_client.api`; they are mapped there, and
so are HTTP status codes: the rest of the client decides by the class of an error, never
by its ``status`` (kept on :class:`Rejected` for messages and logs only).
"""

from __future__ import annotations

from yadml_common import wire

#: The failure reasons of :class:`yadml_common.wire.FailureReport`.
FailureReason = wire.FailureReason

__all__ = [
    "ExecutionFailed",
    "FailureReason",
    "Forbidden",
    "IntegrityError",
    "NotAttached",
    "PayloadRejected",
    "PermanentError",
    "ProtocolError",
    "Rejected",
    "StateError",
    "StateLocked",
    "TransientError",
    "Unauthorized",
    "YadmlClientError",
]


class YadmlClientError(Exception):
    """Base class of every error the volunteer client raises on purpose."""


class TransientError(YadmlClientError):
    """The request may succeed later: network error, timeout, 5xx, or 429.

    ``retry_after`` is the server's ``Retry-After`` hint in seconds, when it gave one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProtocolError(TransientError):
    """The server's answer could not be parsed as the expected wire model."""


class PermanentError(YadmlClientError):
    """Retrying the same request will not help."""


class Rejected(PermanentError):
    """The server refused the request with a 4xx status and a JSON ``{error, detail}`` body.

    ``status`` is for messages and logs; callers catch the subclasses below instead.
    """

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"HTTP {status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail


class Unauthorized(Rejected):
    """401: the host token is missing or not valid; the host must attach again."""


class Forbidden(Rejected):
    """403: the host is banned, or the resource (a result) belongs to another host."""


class PayloadRejected(Rejected):
    """413/422: the server will never take this body (an output too large, or invalid tensors).

    Unlike other refusals (the result is gone, or another upload won), this says the
    output itself is bad, so the client reports the unit as failed.
    """


class IntegrityError(YadmlClientError):
    """A downloaded blob does not have the announced sha256 (or is larger than announced)."""

    def __init__(self, message: str, *, expected: str, actual: str | None = None) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class ExecutionFailed(YadmlClientError):
    """An executor (or the pipeline around it) failed; ``reason`` is a FailureReport reason."""

    def __init__(self, reason: FailureReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: FailureReason = reason
        self.detail = detail


class StateError(YadmlClientError):
    """The local state directory is missing something or cannot be used."""


class NotAttached(StateError):
    """The state directory has no attachment: run ``yadml-client attach URL`` first."""


class StateLocked(StateError):
    """Another client process holds the lock of this state directory."""
