"""Standard Webhooks signing, with one secret per caller.

Per caller, not per server: with one server-wide secret any key holder could sign a webhook that
another caller's receiver would accept. Each caller's secret is derived from one server key, so
nothing is stored per API key and every API node that shares the key (or `url_secret`) agrees.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from functools import cache
from pathlib import Path

from kandinsky_serve.settings import Settings

KEY_FILE = "replicate-webhook.key"


@cache
def _key_from_file(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as out:
        key = secrets.token_bytes(32)
        out.write(key)
    return key


def server_key(settings: Settings) -> bytes:
    if settings.url_secret:
        return hashlib.sha256(b"replicate-webhooks\0" + settings.url_secret.encode()).digest()
    return _key_from_file(settings.data_dir.resolve() / KEY_FILE)


def secret_for(settings: Settings, owner: str) -> str:
    """`whsec_<base64>`, stable for the owner across restarts."""
    derived = hmac.new(server_key(settings), owner.encode(), hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(derived).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
