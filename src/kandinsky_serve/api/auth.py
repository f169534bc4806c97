"""Who is calling: the API key from `x-api-key` or `Authorization: Bearer|Token <key>`.

Keys are required when the server listens beyond loopback, and once any key has ever been created
(revoking the last one does not reopen a server that may sit behind a reverse proxy), unless
KS_REQUIRE_KEYS says otherwise: a fresh server is never open to the world by accident.

A local server without keys serves one local user, whatever key a client presents: SDKs refuse to
start without one (so users pass "sk-local"), and the vendors' snippets send "YOUR_API_KEY". A key
that is valid there still identifies its owner.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import Headers

from kandinsky_serve.api.state import app_state
from kandinsky_serve.auth.caller import Caller
from kandinsky_serve.domain.errors import ErrorCode, ServeError

LOCAL_OWNER = "local"
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def api_key_from(headers: Headers) -> str | None:
    if key := headers.get("x-api-key"):
        return key.strip()
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    return None


def authenticate(request: Request) -> Caller:
    state = app_state(request)
    secret = api_key_from(request.headers)
    key = state.keys.verify(secret) if secret else None
    if key is not None:
        return Caller(key.id, key)
    if not keys_required(request):
        return Caller(LOCAL_OWNER, None)  # a placeholder key, or none: the local user
    if secret:
        raise ServeError(ErrorCode.UNAUTHORIZED, "The API key is not valid (unknown or revoked).")
    raise ServeError(
        ErrorCode.UNAUTHORIZED,
        "An API key is required: send it as x-api-key or Authorization: Bearer <key> "
        "(create one with `kandinsky-serve keys create`).",
    )


def keys_required(request: Request) -> bool:
    state = app_state(request)
    if state.settings.require_keys is not None:
        return state.settings.require_keys
    return state.settings.host not in _LOOPBACK or state.keys.any_created()


def caller_owner(caller: Annotated[Caller, Depends(authenticate)]) -> str:
    return caller.owner


CallerDep = Annotated[Caller, Depends(authenticate)]
Owner = Annotated[str, Depends(caller_owner)]

__all__ = ["LOCAL_OWNER", "CallerDep", "Owner", "api_key_from", "authenticate", "keys_required"]
