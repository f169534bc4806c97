"""Noticing that the client of a request has gone away, for calls whose job dies with their answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request


def client_gone(request: Request) -> Callable[[], Awaitable[None]]:
    """Waits until the client closes its connection; only for use once the body has been read.

    The ASGI server answers `receive()` with `http.disconnect` when the connection closes: uvicorn
    (h11 and httptools alike) resumes reading the socket while someone waits on `receive`, so it
    sees the close at once. BodyLimit passes the message through."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass  # what is left of a body the handler did not read

    return gone
