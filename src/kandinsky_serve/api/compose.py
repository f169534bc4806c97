"""The app this project serves: the native API and every dialect, listed here (the one place)."""

from __future__ import annotations

from fastapi import FastAPI

from kandinsky_serve.api import dialects
from kandinsky_serve.api.app import create_app
from kandinsky_serve.runtime import Blueprint
from kandinsky_serve.settings import Settings


def serve_app(settings: Settings, *, run_workers: bool = True) -> FastAPI:
    """The whole API on settings' runtime. run_workers: see `Blueprint`."""
    return create_app(Blueprint(settings, run_workers), dialects.ALL)
