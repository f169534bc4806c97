"""Errors on the wire: one ServeError taxonomy, rendered in the shape of the dialect that was called.

A route's first tag names its dialect; each dialect registers how it renders an error. Request
bodies FastAPI cannot parse become invalid_input errors that name the field, never a bare 422.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from kandinsky_serve.domain.errors import ErrorCode, ServeError
from kandinsky_serve.domain.request import first_problem

Renderer = Callable[[ServeError], Response]

log = logging.getLogger(__name__)

# Redis restarts in seconds (AOF replay); a client told to come back sooner would only find it down
STORE_OUTAGE_RETRY_AFTER_S = 5.0


def error_headers(error: ServeError) -> dict[str, str]:
    return {"Retry-After": str(round(error.retry_after))} if error.retry_after is not None else {}


def native_error(error: ServeError) -> Response:
    body = {"error": {"code": error.code.value, "message": error.message, "field": error.field}}
    return JSONResponse(body, status_code=error.http_status, headers=error_headers(error))


_RENDERERS: dict[str, Renderer] = {"native": native_error}


def register_renderer(dialect: str, renderer: Renderer) -> None:
    _RENDERERS[dialect] = renderer


def render(request: Request, error: ServeError) -> Response:
    route = request.scope.get("route")
    tags = getattr(route, "tags", None) or ["native"]
    return _RENDERERS.get(str(tags[0]), native_error)(error)


def install(app: FastAPI) -> None:
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
