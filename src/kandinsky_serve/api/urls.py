"""Absolute URLs back to this server, as clients follow them verbatim (the Segmind SDK does).

Output URLs are signed and expire with the retention period: they are handed to browsers and
SDKs that fetch them without an API key, so the signature is what proves the caller got them
from us.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from fastapi import Request

from kandinsky_serve.api.state import app_state
from kandinsky_serve.settings import Settings


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


def load_url_secret(settings: Settings) -> bytes:
    """The configured secret, or one kept in the data dir so links survive restarts."""
    if settings.url_secret:
        return settings.url_secret.encode()
    path: Path = settings.data_dir / "url_secret"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return path.read_text().strip().encode()
