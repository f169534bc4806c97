"""Input images as clients send them: data URIs, bare base64, or http(s) URLs.

URLs (and webhook targets) are refused when they point at loopback, private, link-local or other
non-public addresses, unless `allow_private_urls` is set: a server that fetches whatever it is
told would let any caller reach the machines behind it (`kandinsky_serve.net`). `api.fetch` fetches
URLs: on the event loop, within one deadline, when the translation runs under `run_with_fetches`.
This server's own file URLs (uploads, output links) are not fetched at all: a `LocalFiles` resolver
reads them from the stores, as their owner.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from kandinsky_serve.api.fetch import fetched
from kandinsky_serve.domain.errors import ErrorCode, ServeError, invalid
from kandinsky_serve.net import pinned
from kandinsky_serve.settings import Settings

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
        return own if own is not None else fetched(value, field, settings)
    return _b64(value, field, settings)


def _b64(text: str, field: str, settings: Settings) -> bytes:
    if len(text) > settings.max_input_bytes * 4 // 3 + 4:
        raise ServeError(ErrorCode.PAYLOAD_TOO_LARGE, f"{field}: the image is larger than the limit", field=field)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(field, "is not a data URI, base64 image or http(s) URL") from None


def check_public_url(url: str, field: str, settings: Settings) -> None:
    """Refuses URLs that are not http(s) or whose host resolves to a non-public address (a check
    when a URL is accepted; every use resolves and checks again, and connects where it checked)."""
    try:
        pinned.check(url, settings.allow_private_urls)
    except pinned.Refused as exc:
        raise invalid(field, str(exc)) from None
