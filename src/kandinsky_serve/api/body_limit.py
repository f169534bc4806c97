"""A cap on request bodies, enforced while they are read.

The error is raised from the body read, after routing, so it is rendered in the shape of the
dialect that was called; a body that claims too much in Content-Length is refused before a byte
of it is read.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kandinsky_serve.domain.errors import ErrorCode, ServeError


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> ServeError:
        mib = self.max_bytes / (1024 * 1024)
        return ServeError(ErrorCode.PAYLOAD_TOO_LARGE, f"The request body is larger than {mib:g} MiB.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        claims_too_much = declared is not None and declared.isdigit() and int(declared) > self.max_bytes
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            if claims_too_much:
                raise self._too_large()
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, limited, send)
