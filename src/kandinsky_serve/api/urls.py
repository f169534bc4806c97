"""Absolute URLs back to this server, as clients follow them verbatim (the Segmind SDK does).

Output URLs are signed and expire with the retention period: they are handed to browsers and
SDKs that fetch them without an API key, so the signature is what proves the caller got them
from us.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from fastapi import Request

from kandinsky_serve.api.state import app_state


def base_url(request: Request) -> str:
    configured = app_state(request).settings.public_url
    return (configured or str(request.base_url)).rstrip("/")


def file_url(request: Request, key: str) -> str:
    state = app_state(request)
    # rounded up to the hour, so every read of a job hands out the same link for each output
    expires = -(-int(time.time() + state.settings.retention_seconds) // 3600) * 3600
    return f"{base_url(request)}/v1/files/{key}?expires={expires}&sig={_sign(state.url_secret, key, expires)}"


def valid_signature(secret: bytes, key: str, expires: int, signature: str) -> bool:
    # compare_digest raises on non-ASCII text, and a key that is not UTF-8 cannot be signed
    if not signature.isascii() or not key.isprintable() or expires < time.time():
        return False
    try:
        return hmac.compare_digest(_sign(secret, key, expires), signature)
    except UnicodeEncodeError:
        return False


def _sign(secret: bytes, key: str, expires: int) -> str:
    return hmac.new(secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()[:32]
