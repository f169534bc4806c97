"""Who is calling: the API key from `x-api-key` or `Authorization: Bearer|Token <key>`.

Keys are required once any key exists or when the server listens beyond loopback, so a fresh
server is never open to the world by accident; a local server without keys serves one local user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import Headers

from kandinsky_serve.api.state import app_state
from kandinsky_serve.auth.keys import ApiKey
from kandinsky_serve.domain.errors import ErrorCode, ServeError

LOCAL_OWNER = "local"
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@dataclass(frozen=True)
class Caller:
    owner: str  # owns the jobs it creates; no other caller can see them
    key: ApiKey | None  # None: the keyless local user


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
    if secret:
        key = state.keys.verify(secret)
        if key is None:
            raise ServeError(ErrorCode.UNAUTHORIZED, "The API key is not valid (unknown or revoked).")
        return Caller(key.id, key)
    if keys_required(request):
        raise ServeError(
            ErrorCode.UNAUTHORIZED,
            "An API key is required: send it as x-api-key or Authorization: Bearer <key> "
            "(create one with `kandinsky-serve keys create`).",
        )
    return Caller(LOCAL_OWNER, None)


def keys_required(request: Request) -> bool:
    state = app_state(request)
    if state.settings.require_keys is not None:
        return state.settings.require_keys
    return state.settings.host not in _LOOPBACK or state.keys.any_active()


def caller_owner(caller: Annotated[Caller, Depends(authenticate)]) -> str:
    return caller.owner


CallerDep = Annotated[Caller, Depends(authenticate)]
Owner = Annotated[str, Depends(caller_owner)]
