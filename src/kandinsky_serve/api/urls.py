"""Absolute URLs back to this server, as clients follow them verbatim (the Segmind SDK does)."""

from __future__ import annotations

from fastapi import Request

from kandinsky_serve.api.state import app_state


def base_url(request: Request) -> str:
    configured = app_state(request).settings.public_url
    return (configured or str(request.base_url)).rstrip("/")


def file_url(request: Request, key: str) -> str:
    return f"{base_url(request)}/v1/files/{key}"
