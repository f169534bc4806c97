"""One taxonomy of stable error codes; every layer raises ServeError, every dialect renders it."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_INPUT = "invalid_input"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    INSUFFICIENT_CREDITS = "insufficient_credits"
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    UNAVAILABLE = "unavailable"  # the job store cannot be reached: nothing was done, try again
    PAYLOAD_TOO_LARGE = "payload_too_large"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    GENERATION_FAILED = "generation_failed"
    OUT_OF_MEMORY = "out_of_memory"
    MODEL_UNAVAILABLE = "model_unavailable"
    WORKER_LOST = "worker_lost"
    CANCELED = "canceled"
    TIMEOUT = "timeout"
    CONTENT_BLOCKED = "content_blocked"
    INTERNAL = "internal"


# The canonical HTTP status of each code; dialects that need another status translate it themselves.
HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_INPUT: 422,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.INSUFFICIENT_CREDITS: 402,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.GENERATION_FAILED: 500,
    ErrorCode.OUT_OF_MEMORY: 507,
    ErrorCode.MODEL_UNAVAILABLE: 503,
    ErrorCode.WORKER_LOST: 500,
    ErrorCode.CANCELED: 409,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.CONTENT_BLOCKED: 400,
    ErrorCode.INTERNAL: 500,
}


class ServeError(Exception):
    """An error meant for the user: a stable code and one plain sentence, never a traceback."""

    def __init__(
        self, code: ErrorCode, message: str, *, field: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after  # seconds, for Retry-After on rate_limited, overloaded, unavailable

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def __repr__(self) -> str:
        return f"ServeError({self.code.value!r}, {self.message!r}, field={self.field!r})"


def invalid(field: str, message: str) -> ServeError:
    """An invalid_input error whose message starts with the offending field's name."""
    return ServeError(ErrorCode.INVALID_INPUT, f"{field}: {message}", field=field)


class Canceled(ServeError):
    """Raised inside a run when every request in it was canceled; the run stops at once."""

    def __init__(self, message: str = "the generation was canceled") -> None:
        super().__init__(ErrorCode.CANCELED, message)
