"""HTTP requests to caller-chosen URLs, connected to the very address that was checked.

A URL is resolved once; every address the lookup gives is judged (`addresses.refusal`); the
connection then goes to one of those addresses, never to a fresh lookup of the name: a resolver that
answers a public address for the check and 127.0.0.1 for the connection (DNS rebinding) gains
nothing. The request still carries the original `Host` header, and over https the host name is the
SNI name and the name the certificate is verified against (httpcore's `sni_hostname`).

Each request gets a client of its own: httpx pools connections by (scheme, IP, port), so a shared
pool could hand a TLS connection made for one host name to another name on the same address.
Environment proxies are ignored (`trust_env=False`): a proxy would connect by name, unchecked.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from ipaddress import ip_address
from ssl import SSLContext

import anyio
import httpx
from anyio.lowlevel import RunVar

from kandinsky_serve.net.addresses import IPAddress, parse_address, refusal

# lookups of names a caller chose may hang for the resolver's whole timeout: they get threads of
# their own, abandoned when the request's deadline passes, never the API's shared pool
DNS_THREADS = 16
_dns_limiter: RunVar[anyio.CapacityLimiter] = RunVar("ks_dns_limiter")


class Refused(Exception):
    """The URL may not be fetched; the message says why, without naming a field."""


@dataclass(frozen=True)
class Target:
    """A URL and the addresses it was checked at: connections go to these, and only these."""

    url: httpx.URL
    addresses: tuple[IPAddress, ...]

    @property
    def host(self) -> str:
        return self.url.raw_host.decode("ascii")

    @property
    def literal(self) -> bool:
        return parse_address(self.host) is not None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for host, in its order (the one lookup a request
    makes; tests replace it to play a rebinding resolver)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for info in infos:
        address = ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def _parse(url: str) -> tuple[httpx.URL, int]:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise Refused("is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise Refused("must be an http or https URL")
    return parsed, parsed.port or (443 if parsed.scheme == "https" else 80)


def _judged(parsed: httpx.URL, addresses: list[IPAddress], allow_private: bool) -> Target:
    if not addresses:
        raise Refused(f"host {parsed.host} has no address")
    if not allow_private:
        for address in addresses:
            why = refusal(address)
            if why is not None:
                raise Refused(f"points at a {why} address ({address}); set allow_private_urls to permit it")
    return Target(parsed, tuple(addresses))


def check(url: str, allow_private: bool) -> Target:
    """The URL's target, resolved on this thread; raises Refused. With allow_private nothing is
    refused for its address, so nothing is looked up (no addresses in the Target)."""
    parsed, port = _parse(url)
    if allow_private:
        return Target(parsed, ())
    literal = parse_address(parsed.host)
    try:
        addresses = [literal] if literal is not None else resolve(parsed.raw_host.decode("ascii"), port)
    except (OSError, UnicodeError):
        raise Refused(f"host {parsed.host} could not be resolved") from None
    return _judged(parsed, addresses, allow_private)


async def target(url: str, allow_private: bool) -> Target:
    """The URL's target, resolved on a thread of the lookup pool; raises Refused. Cancelling the
    caller (its deadline) abandons a lookup that hangs."""
    parsed, port = _parse(url)
    literal = parse_address(parsed.host)
    if literal is not None:
        return _judged(parsed, [literal], allow_private)
    try:
        addresses = await anyio.to_thread.run_sync(
            resolve, parsed.raw_host.decode("ascii"), port, limiter=_lookup_limiter(), abandon_on_cancel=True
        )
    except (OSError, UnicodeError):
        raise Refused(f"host {parsed.host} could not be resolved") from None
    return _judged(parsed, addresses, allow_private)


def _lookup_limiter() -> anyio.CapacityLimiter:
    try:
        return _dns_limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(DNS_THREADS)
        _dns_limiter.set(limiter)
        return limiter


@cache
def ssl_context() -> SSLContext:
    """httpx's default verification (certifi, or SSL_CERT_FILE / SSL_CERT_DIR), made once."""
    return httpx.create_ssl_context()


def client(timeout: float) -> httpx.AsyncClient:
    """A client for one pinned exchange (with its redirects): no proxies, no redirects of its own."""
    return httpx.AsyncClient(verify=ssl_context(), trust_env=False, follow_redirects=False, timeout=timeout)


@asynccontextmanager
async def stream(
    http: httpx.AsyncClient,
    method: str,
    to: Target,
    *,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
) -> AsyncIterator[httpx.Response]:
    """The response (body not read yet) of one request to `to.url`, connected to the first of its
    checked addresses that accepts a connection."""
    extensions = {"sni_hostname": to.host} if to.url.scheme == "https" and not to.literal else {}
    sent = {**(headers or {}), "host": to.url.netloc.decode("ascii")}
    response: httpx.Response | None = None
    failure: httpx.ConnectError | None = None
    for address in to.addresses:
        request = http.build_request(
            method, to.url.copy_with(host=str(address)), headers=sent, content=content, extensions=extensions
        )
        try:
            response = await http.send(request, stream=True)
            break
        except httpx.ConnectError as exc:
            failure = exc
    if response is None:
        assert failure is not None  # a Target has at least one address
        raise failure
    try:
        yield response
    finally:
        await response.aclose()
