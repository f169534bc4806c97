"""Errors as Replicate sends them: RFC 7807 problem details, which replicate-python turns into
ReplicateError(title, detail, status). Input errors carry `invalid_fields`, as Replicate's do."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from kandinsky_serve.api.errors import Responses, error_headers, error_responses
from kandinsky_serve.domain.errors import HTTP_STATUS, ErrorCode, ServeError

_TITLES = {
    ErrorCode.INVALID_INPUT: "Input validation failed",
    ErrorCode.UNAUTHORIZED: "Unauthenticated",
    ErrorCode.FORBIDDEN: "Forbidden",
    ErrorCode.NOT_FOUND: "Not found",
    ErrorCode.INSUFFICIENT_CREDITS: "Insufficient credit",
    ErrorCode.RATE_LIMITED: "Request was throttled",
    ErrorCode.OVERLOADED: "Service unavailable",
    ErrorCode.UNAVAILABLE: "Service unavailable",
    ErrorCode.PAYLOAD_TOO_LARGE: "Payload too large",
    ErrorCode.METHOD_NOT_ALLOWED: "Method not allowed",
}


def _detail(error: ServeError) -> str:
    if error.code is ErrorCode.UNAUTHORIZED:
        return f"You did not pass a valid authentication token. {error.message}"
    if error.code in (ErrorCode.RATE_LIMITED, ErrorCode.OVERLOADED) and error.retry_after is not None:
        wait = max(1, round(error.retry_after))
        return f"Request was throttled. Expected available in {wait} second{'s' if wait != 1 else ''}."
    return error.message


def render_error(error: ServeError) -> Response:
    status = error.http_status
    body: dict[str, Any] = {"title": _TITLES.get(error.code, "Internal server error"), "status": status}
    if error.code is ErrorCode.INVALID_INPUT and error.field == "version":
        body["title"] = "Invalid version or not permitted"
        body["detail"] = error.message
    elif error.code is ErrorCode.INVALID_INPUT and error.field:
        description = error.message.removeprefix(f"{error.field}:").strip()
        # Replicate lists each problem as "- field: description" and names the fields separately
        body["detail"] = f"- {error.field}: {description}\n"
        body["invalid_fields"] = [{"type": "invalid", "field": error.field, "description": description}]
    else:
        body["detail"] = _detail(error)
    return JSONResponse(body, status_code=status, headers=error_headers(error))


class InvalidField(BaseModel):
    type: str
    field: str
    description: str


class ReplicateProblem(BaseModel):
    """RFC 7807 problem details, as Replicate sends them (`invalid_fields` on input errors)."""

    title: str
    status: int
    detail: str
    invalid_fields: list[InvalidField] | None = None


def replicate_errors(*codes: ErrorCode) -> Responses:
    return error_responses(ReplicateProblem, HTTP_STATUS.__getitem__, codes)
