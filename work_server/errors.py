"""Domain errors, raised by services and the store; handlers map them to HTTP answers.

Each carries a stable machine-readable ``code`` and a human ``detail``; the HTTP status
lives here in one table so the mapping is the same for every handler.
"""

from __future__ import annotations


class DomainError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class BadRequest(DomainError):
    status = 400
    code = "bad_request"


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class Gone(DomainError):
    status = 410
    code = "gone"


class PayloadTooLarge(DomainError):
    status = 413
    code = "payload_too_large"


class Unprocessable(DomainError):
    status = 422
    code = "unprocessable"


class InvalidResult(Unprocessable):
    code = "invalid_result"


class TooManyRequests(DomainError):
    """429; the error middleware adds ``Retry-After`` (whole seconds, rounded up)."""

    status = 429
    code = "rate_limited"

    def __init__(self, detail: str, *, retry_after_s: float, code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.retry_after_s = retry_after_s
