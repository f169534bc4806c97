"""What every Segmind response shares: the router, `{"error": ...}` bodies, `x-remaining-credits`.

Segmind puts the caller's balance on every response, errors included, so the header is added by
the route class itself rather than by each handler: it also covers errors raised while the
caller is authenticated or the body is read.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from kandinsky_serve.api.auth import LOCAL_OWNER, api_key_from, authenticate, keys_required
from kandinsky_serve.api.errors import Responses, error_headers, error_responses
from kandinsky_serve.api.json_body import read_object
from kandinsky_serve.api.state import app_state
from kandinsky_serve.auth.caller import Caller
from kandinsky_serve.domain.errors import ErrorCode, ServeError

CREDITS_HEADER = "x-remaining-credits"
# A key without a credit limit reports this: clients parse the header with int()/parseInt/Number
# and compare it with a threshold, so a large plain number keeps them working where "unlimited"
# or "inf" would be NaN or an exception.
UNLIMITED_CREDITS = "1000000000"

_HTTP = {
    ErrorCode.INVALID_INPUT: 400,
    ErrorCode.CONTENT_BLOCKED: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.INSUFFICIENT_CREDITS: 406,
    ErrorCode.CANCELED: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.OVERLOADED: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.WORKER_LOST: 502,
    ErrorCode.MODEL_UNAVAILABLE: 502,
    ErrorCode.TIMEOUT: 504,
}


def render_error(error: ServeError) -> Response:
    # an error about a parameter already names the Segmind one: slugs.to_request renames it
    return JSONResponse({"error": error.message}, status_code=_HTTP.get(error.code, 500), headers=error_headers(error))


class SegmindError(BaseModel):
    """Segmind's errors: one sentence, naming the Segmind field when a parameter is wrong."""

    error: str


def _credits_header(required: bool) -> dict[str, Any]:
    description = f"the key's remaining credits ({UNLIMITED_CREDITS} without a limit, 0 without a valid key)"
    return {CREDITS_HEADER: {"description": description, "required": required, "schema": {"type": "string"}}}


def segmind_responses(*codes: ErrorCode, ok: dict[str, Any] | None = None) -> Responses:
    """A Segmind route's `responses=`: its errors with Segmind's statuses, and the credits header
    (`ok`: more of the 200 response, such as its content)."""
    # errors carry the header too, but not a store outage's 503, which is answered before the route
    responses = error_responses(SegmindError, lambda code: _HTTP.get(code, 500), codes, _credits_header(False))
    return {200: {**(ok or {}), "headers": _credits_header(True)}, **responses}


def format_credits(remaining: float | None) -> str:
    if remaining is None:
        return UNLIMITED_CREDITS
    return f"{remaining:.4f}".rstrip("0").rstrip(".")


def _remaining_credits(request: Request) -> str:
    state = app_state(request)
    caller: Caller | None = getattr(request.state, "segmind_caller", None)
    if caller is None:
        # the handler failed before authentication finished (401, 429): find the key without
        # taking another rate-limit token
        secret = api_key_from(request.headers)
        key = state.keys.verify(secret) if secret else None
        if key is not None:
            caller = Caller(key.id, key)
        elif not keys_required(request):  # a keyless server ignores a placeholder key
            caller = Caller(LOCAL_OWNER, None)
        else:
            return "0"  # no valid key, no credits
    return format_credits(state.service.remaining_credits(caller))


class SegmindRoute(APIRoute):
    """Renders ServeErrors itself (so that they get the header too) and adds the credits header."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def with_credits(request: Request) -> Response:
            try:
                response = await handle(request)
            except ServeError as error:
                response = render_error(error)
            response.headers[CREDITS_HEADER] = await anyio.to_thread.run_sync(_remaining_credits, request)
            return response

        return with_credits


router = APIRouter(tags=["segmind"], route_class=SegmindRoute)


def segmind_caller(request: Request, caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
    request.state.segmind_caller = caller
    return caller


SegmindCaller = Annotated[Caller, Depends(segmind_caller)]


async def json_body(request: Request) -> dict[str, Any]:
    """The JSON object a Segmind call sends; read here so a bad body is a Segmind-shaped 400."""
    return await read_object(request, empty_is={})
