"""Errors on the wire: one ServeError taxonomy, rendered in the shape of the dialect that was called.

A route's first tag names its dialect; the app installs each dialect's renderer under that name
(`install(app, renderers)`; the native shape for every other route). Request
bodies FastAPI cannot parse become invalid_input errors that name the field, never a bare 422.

The OpenAPI document says the same: each route lists the errors it can answer (`error_responses`,
through its dialect's helper, with the dialect's own body model and statuses), and FastAPI's guessed
422 `HTTPValidationError`, a body this server never sends, is taken out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from kandinsky_serve.domain.errors import HTTP_STATUS, ErrorCode, ServeError
from kandinsky_serve.domain.request import first_problem

Renderer = Callable[[ServeError], Response]
# a route's `responses=`: status -> OpenAPI response object (FastAPI's `model` key included)
Responses = dict[int | str, dict[str, Any]]

log = logging.getLogger(__name__)

# Redis restarts in seconds (AOF replay); a client told to come back sooner would only find it down
STORE_OUTAGE_RETRY_AFTER_S = 5.0


def error_headers(error: ServeError) -> dict[str, str]:
    return {"Retry-After": str(round(error.retry_after))} if error.retry_after is not None else {}


def native_error(error: ServeError) -> Response:
    body = {"error": {"code": error.code.value, "message": error.message, "field": error.field}}
    return JSONResponse(body, status_code=error.http_status, headers=error_headers(error))


def install(app: FastAPI, renderers: Mapping[str, Renderer]) -> None:
    """Renders every error in the shape of the dialect whose route raised it: `renderers` by a route's
    first tag, the native shape for the rest (and for requests that matched no route)."""
    by_tag = {"native": native_error, **renderers}

    def render(request: Request, error: ServeError) -> Response:
        route = request.scope.get("route")
        tags = getattr(route, "tags", None) or ["native"]
        return by_tag.get(str(tags[0]), native_error)(error)

    async def on_serve_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServeError)
        return render(request, exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = exc.errors() or [{"loc": ("body",), "msg": "is not a valid request", "type": "missing"}]
        return render(request, first_problem(problems))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        # FastAPI wraps errors raised while it reads a body (such as BodyLimit's) in a 400
        if isinstance(exc.__cause__, ServeError):
            return render(request, exc.__cause__)
        code = _HTTP_CODES.get(
            exc.status_code, ErrorCode.INVALID_INPUT if exc.status_code < 500 else ErrorCode.INTERNAL
        )
        response = render(request, ServeError(code, str(exc.detail)))
        response.headers.update(exc.headers or {})  # a 405's Allow
        return response

    async def on_store_outage(request: Request, exc: Exception) -> Response:
        # any route may meet it (keys, rate limits, jobs live in Redis): answer what a client can act
        # on, in its dialect's shape, instead of a plain-text 500
        log.warning("the store is unreachable (%s: %s); answering 503", type(exc).__name__, exc)
        error = ServeError(
            ErrorCode.UNAVAILABLE,
            "The job store cannot be reached right now; nothing was done. Try again shortly.",
            retry_after=STORE_OUTAGE_RETRY_AFTER_S,
        )
        return render(request, error)

    app.add_exception_handler(ServeError, on_serve_error)
    app.add_exception_handler(redis.RedisError, on_store_outage)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    _document_errors_as_rendered(app)


_HTTP_CODES = {
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    429: ErrorCode.RATE_LIMITED,
}


def not_found(what: str) -> ServeError:
    return ServeError(ErrorCode.NOT_FOUND, f"{what} not found.")


# --- the errors in the OpenAPI document --------------------------------------------------------

# what a route does that can go wrong, as error codes: each dialect's helper turns them into statuses
ON_READ = (ErrorCode.UNAUTHORIZED, ErrorCode.NOT_FOUND, ErrorCode.UNAVAILABLE)  # a caller's job or file
ON_SUBMIT = (  # queueing a job: bad input, no key, credits, rate and in-flight limits, a full queue, the store
    ErrorCode.INVALID_INPUT,
    ErrorCode.UNAUTHORIZED,
    ErrorCode.INSUFFICIENT_CREDITS,
    ErrorCode.RATE_LIMITED,
    ErrorCode.OVERLOADED,
    ErrorCode.UNAVAILABLE,
    ErrorCode.PAYLOAD_TOO_LARGE,
)
ON_RUN = (  # waiting for the job's outcome in the same request
    ErrorCode.CANCELED,
    ErrorCode.TIMEOUT,
    ErrorCode.GENERATION_FAILED,
    ErrorCode.OUT_OF_MEMORY,
    ErrorCode.WORKER_LOST,
    ErrorCode.MODEL_UNAVAILABLE,
)
# the codes whose errors may say when to come back
_RETRY_AFTER_CODES = {ErrorCode.RATE_LIMITED, ErrorCode.OVERLOADED, ErrorCode.UNAVAILABLE}
RETRY_AFTER_HEADER = {
    "Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}
}


def error_responses(
    model: Any, status_of: Callable[[ErrorCode], int], codes: Iterable[ErrorCode], headers: dict[str, Any] | None = None
) -> Responses:
    """A route's `responses=` for the errors it can answer, each under the status its dialect gives it:
    codes that share a status share one entry, whose description names them."""
    grouped: dict[int, list[ErrorCode]] = {}
    for code in codes:
        grouped.setdefault(status_of(code), []).append(code)
    responses: Responses = {}
    for status, group in sorted(grouped.items()):
        phrase, names = HTTPStatus(status).phrase, ", ".join(dict.fromkeys(code.value for code in group))
        description = phrase if names == phrase.lower().replace(" ", "_") else f"{phrase}: {names}"
        entry: dict[str, Any] = {"model": model, "description": description}
        entry_headers = dict(headers or {})
        if _RETRY_AFTER_CODES.intersection(group):
            entry_headers.update(RETRY_AFTER_HEADER)
        if entry_headers:
            entry["headers"] = entry_headers
        responses[status] = entry
    return responses


class NativeErrorDetail(BaseModel):
    code: ErrorCode
    message: str
    field: str | None


class NativeError(BaseModel):
    """The native API's errors: a stable code, one sentence, and the field it is about."""

    error: NativeErrorDetail


def native_errors(*codes: ErrorCode) -> Responses:
    return error_responses(NativeError, HTTP_STATUS.__getitem__, codes)


def _document_errors_as_rendered(app: FastAPI) -> None:
    """FastAPI documents a 422 `HTTPValidationError` on every route with parameters; this server
    renders validation errors in each dialect's own shape and status, which each route declares."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        document = build()  # cached by FastAPI; the edit below is idempotent
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                schema = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
                if schema.get("$ref", "").endswith("/HTTPValidationError"):
                    del responses["422"]
        schemas = document.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
