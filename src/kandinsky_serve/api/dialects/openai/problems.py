"""Errors in OpenAI's envelope: `{"error": {"message", "type", "param", "code"}}` (reference §5.4).

The openai SDK turns the status into its exception class and retries 408, 409, 429 and 5xx on its
own. Where a retry cannot help (no credits left, a job canceled, a wait that ran out while the job
may still be running) the response says `x-should-retry: false`, so the SDK neither spends the
caller's time nor queues the same work twice.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from kandinsky_serve.api.dialects.openai.translate import FIELDS
from kandinsky_serve.api.errors import Responses, error_headers, error_responses
from kandinsky_serve.domain.errors import ErrorCode, ServeError

# code -> (HTTP status, OpenAI error type, OpenAI error code)
_WIRE: dict[ErrorCode, tuple[int, str, str]] = {
    ErrorCode.INVALID_INPUT: (400, "invalid_request_error", "invalid_value"),
    ErrorCode.UNAUTHORIZED: (401, "invalid_request_error", "invalid_api_key"),
    ErrorCode.FORBIDDEN: (403, "invalid_request_error", "forbidden"),
    ErrorCode.NOT_FOUND: (404, "invalid_request_error", "not_found"),
    ErrorCode.INSUFFICIENT_CREDITS: (429, "insufficient_quota", "insufficient_quota"),
    ErrorCode.RATE_LIMITED: (429, "requests", "rate_limit_exceeded"),
    ErrorCode.OVERLOADED: (503, "server_error", "overloaded"),
    ErrorCode.UNAVAILABLE: (503, "server_error", "service_unavailable"),
    ErrorCode.PAYLOAD_TOO_LARGE: (413, "invalid_request_error", "payload_too_large"),
    ErrorCode.METHOD_NOT_ALLOWED: (405, "invalid_request_error", "method_not_allowed"),
    ErrorCode.GENERATION_FAILED: (500, "server_error", "generation_failed"),
    ErrorCode.OUT_OF_MEMORY: (500, "server_error", "out_of_memory"),
    ErrorCode.MODEL_UNAVAILABLE: (503, "server_error", "model_unavailable"),
    ErrorCode.WORKER_LOST: (500, "server_error", "worker_lost"),
    ErrorCode.CANCELED: (409, "invalid_request_error", "canceled"),
    ErrorCode.TIMEOUT: (504, "server_error", "timeout"),
    ErrorCode.CONTENT_BLOCKED: (400, "invalid_request_error", "content_policy_violation"),
    ErrorCode.INTERNAL: (500, "server_error", "internal"),
}

_NO_RETRY = {ErrorCode.INSUFFICIENT_CREDITS, ErrorCode.CANCELED, ErrorCode.TIMEOUT}


def openai_param(field: str | None) -> str | None:
    """The OpenAI parameter an error is about (`param`), as the caller sent it."""
    if field is None or field == "body":
        return None
    return FIELDS.spelled(field)


def render_error(error: ServeError) -> Response:
    status, kind, code = _WIRE.get(error.code, (500, "server_error", error.code.value))
    param = openai_param(error.field)
    if error.code is ErrorCode.NOT_FOUND and param == "model":
        code = "model_not_found"
    message = error.message if param is None else FIELDS.renamed(error).message
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    headers = error_headers(error)
    if error.code in _NO_RETRY:
        headers["x-should-retry"] = "false"
    return JSONResponse(body, status_code=status, headers=headers)


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class OpenAIError(BaseModel):
    """OpenAI's error envelope."""

    error: OpenAIErrorDetail


def openai_errors(*codes: ErrorCode) -> Responses:
    return error_responses(OpenAIError, lambda code: _WIRE.get(code, (500, "", ""))[0], codes)
