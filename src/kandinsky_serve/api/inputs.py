"""Input images as clients send them: data URIs, bare base64, or http(s) URLs.

URLs (and webhook targets) are refused when they point at loopback, private, link-local or other
non-public addresses, unless `allow_private_urls` is set: a server that fetches whatever it is
told would let any caller reach the machines behind it. This server's own file URLs (uploads, output
links) are not fetched at all: a `LocalFiles` resolver reads them from the stores, as their owner.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from kandinsky_serve.domain.errors import ErrorCode, ServeError, invalid
from kandinsky_serve.settings import Settings

_MAX_REDIRECTS = 3

# (url, field) -> the bytes of a URL of this server's own, None for any other URL; raises a ServeError
# naming the field for one of ours that the caller cannot read (another key's file, or expired)
LocalFiles = Callable[[str, str], bytes | None]


def image_bytes(value: str, field: str, settings: Settings, local: LocalFiles | None = None) -> bytes:
    """The bytes of an image given as a data URI, base64 or URL; a ServeError names the field."""
    value = value.strip()
    if value.startswith("data:"):
        header, _, payload = value.partition(",")
        if ";base64" not in header:
            raise invalid(field, "data URIs must be base64-encoded (data:image/png;base64,...)")
        return _b64(payload, field, settings)
    if value.startswith(("http://", "https://")):
        own = local(value, field) if local is not None else None
        return own if own is not None else fetch(value, field, settings)
    return _b64(value, field, settings)


def _b64(text: str, field: str, settings: Settings) -> bytes:
    if len(text) > settings.max_input_bytes * 4 // 3 + 4:
        raise ServeError(ErrorCode.PAYLOAD_TOO_LARGE, f"{field}: the image is larger than the limit", field=field)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(field, "is not a data URI, base64 image or http(s) URL") from None


def check_public_url(url: str, field: str, settings: Settings) -> None:
    """Refuses URLs that are not http(s) or whose host resolves to a non-public address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(field, "must be an http or https URL")
    if settings.allow_private_urls:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError:
        raise invalid(field, f"host {parts.hostname} could not be resolved") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise invalid(
                field, f"points at a private or local address ({address}); set allow_private_urls to permit it"
            )


def fetch(url: str, field: str, settings: Settings) -> bytes:
    """GETs an image, checking every redirect hop, reading at most max_input_bytes."""
    with httpx.Client(timeout=20.0, follow_redirects=False) as client:
        for _ in range(_MAX_REDIRECTS + 1):
            check_public_url(url, field, settings)
            try:
                with client.stream("GET", url) as response:
                    if response.is_redirect:
                        url = str(response.next_request.url) if response.next_request else ""
                        continue
                    if response.status_code != 200:
                        raise invalid(field, f"fetching {url} answered HTTP {response.status_code}")
                    data = bytearray()
                    for chunk in response.iter_bytes():
                        data.extend(chunk)
                        if len(data) > settings.max_input_bytes:
                            raise ServeError(
                                ErrorCode.PAYLOAD_TOO_LARGE, f"{field}: the image at {url} is too large", field=field
                            )
                    return bytes(data)
            except httpx.HTTPError as exc:
                raise invalid(field, f"could not fetch {url} ({type(exc).__name__})") from None
    raise invalid(field, f"{url} redirects too many times")
