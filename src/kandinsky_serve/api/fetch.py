"""Input images given as URLs: fetched on the event loop, never on the threads that serve requests.

The dialects translate a body in a worker thread (plain functions, easy to test), and translation is
where an image URL turns into bytes. A fetch there would hold one of the API's shared threads for as
long as the remote host cares to trickle, so `run_with_fetches` runs the translation so that the
first URL it has no bytes for stops it (`_NeedsFetch`, before anything is submitted), fetches that
URL asynchronously, and runs the translation again with the bytes in hand; translation is cheap and
has no side effects until its very end. A slow host then costs only its own request: a coroutine
and a socket, bounded by one deadline (`fetch_timeout_seconds`) for all of a request's fetches.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TypeVar, TypeVarTuple

import anyio
import httpx

from kandinsky_serve.domain.errors import ErrorCode, ServeError
from kandinsky_serve.net import pinned
from kandinsky_serve.settings import Settings

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

MAX_REDIRECTS = 3
MAX_URLS = 16  # distinct image URLs one request may name (fuse takes 8 at most)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class FetchFailed(Exception):
    """A URL could not be fetched; `for_field` is the error the caller sees."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def for_field(self, name: str) -> ServeError:
        return ServeError(self.code, f"{name}: {self.message}", field=name)


def _short(url: str) -> str:
    return url if len(url) <= 120 else url[:117] + "..."


async def fetch_image(url: str, settings: Settings, deadline: float | None = None) -> bytes:
    """GETs an image: every hop resolved once, checked and connected to the address checked; at most
    max_input_bytes; all of it by `deadline` (anyio clock; default: fetch_timeout_seconds from now)."""
    allowed = settings.fetch_timeout_seconds
    if deadline is None:
        deadline = anyio.current_time() + allowed
    try:
        with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
            return await _fetch(url, settings)
    except TimeoutError:
        raise FetchFailed(
            ErrorCode.INVALID_INPUT, f"fetching {_short(url)} did not finish within {allowed:g} s"
        ) from None


async def _fetch(url: str, settings: Settings) -> bytes:
    cap = settings.max_input_bytes
    too_large = FetchFailed(ErrorCode.PAYLOAD_TOO_LARGE, f"the image at {_short(url)} is larger than {cap} bytes")
    # compressed bodies are refused, not inflated: a small gzip body can inflate a thousandfold
    headers = {"accept": "image/*", "accept-encoding": "identity"}
    async with pinned.client(settings.fetch_timeout_seconds) as http:
        for hop in range(MAX_REDIRECTS + 1):
            try:
                to = await pinned.target(url, settings.allow_private_urls)
            except pinned.Refused as exc:
                where = f"redirects to {_short(url)}: " if hop else ""
                raise FetchFailed(ErrorCode.INVALID_INPUT, f"{where}{exc}") from None
            try:
                async with pinned.stream(http, "GET", to, headers=headers) as response:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        url = str(to.url.join(response.headers["location"]))
                        continue
                    if response.status_code != 200:
                        message = f"fetching {_short(url)} answered HTTP {response.status_code}"
                        raise FetchFailed(ErrorCode.INVALID_INPUT, message)
                    encoding = response.headers.get("content-encoding", "identity").strip().lower()
                    if encoding not in ("", "identity"):
                        message = f"{_short(url)} came {encoding}-encoded; serve it uncompressed"
                        raise FetchFailed(ErrorCode.INVALID_INPUT, message)
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > cap:
                        raise too_large
                    data = bytearray()
                    async for chunk in response.aiter_raw():
                        data.extend(chunk)
                        if len(data) > cap:
                            raise too_large
                    return bytes(data)
            except httpx.HTTPError as exc:
                raise FetchFailed(
                    ErrorCode.INVALID_INPUT, f"could not fetch {_short(url)} ({type(exc).__name__})"
                ) from None
    raise FetchFailed(ErrorCode.INVALID_INPUT, f"{_short(url)} redirects more than {MAX_REDIRECTS} times")


@dataclass
class _Fetched:
    """The outcomes of one request's fetches, by URL, and the deadline they share."""

    deadline: float
    outcomes: dict[str, bytes | FetchFailed] = field(default_factory=dict)


_current: ContextVar[_Fetched | None] = ContextVar("ks_fetched", default=None)


class _NeedsFetch(Exception):
    """Raised by `fetched` in a translation run by `run_with_fetches`, for a URL not fetched yet."""

    def __init__(self, url: str, field: str) -> None:
        super().__init__(url)
        self.url = url
        self.field = field


def fetched(url: str, field: str, settings: Settings) -> bytes:
    """The bytes at url, for a translation running in a worker thread; a ServeError names the field."""
    known = _current.get()
    if known is None:
        # not under run_with_fetches (the CLI, a direct call): this thread is ours to block
        try:
            return anyio.run(fetch_image, url, settings)
        except FetchFailed as exc:
            raise exc.for_field(field) from None
    if url not in known.outcomes:
        raise _NeedsFetch(url, field)
    outcome = known.outcomes[url]
    if isinstance(outcome, FetchFailed):
        raise outcome.for_field(field)
    return outcome


def _with(known: _Fetched, func: Callable[[*Ts], T], *args: *Ts) -> T:
    token = _current.set(known)
    try:
        return func(*args)
    finally:
        _current.reset(token)


async def run_with_fetches(settings: Settings, func: Callable[[*Ts], T], *args: *Ts) -> T:
    """`await anyio.to_thread.run_sync(func, *args)` for a translation that may fetch image URLs:
    the fetches happen here, on the event loop, between runs of func; func runs once more per URL."""
    known = _Fetched(deadline=anyio.current_time() + settings.fetch_timeout_seconds)
    while True:
        try:
            return await anyio.to_thread.run_sync(_with, known, func, *args)
        except _NeedsFetch as need:
            if len(known.outcomes) >= MAX_URLS:
                raise ServeError(
                    ErrorCode.INVALID_INPUT,
                    f"{need.field}: a request may name at most {MAX_URLS} image URLs",
                    field=need.field,
                ) from None
            try:
                known.outcomes[need.url] = await fetch_image(need.url, settings, known.deadline)
            except FetchFailed as exc:
                known.outcomes[need.url] = exc
