"""The HTTP API: one app, a native API and thin dialect adapters over the JobService."""

from kandinsky_serve.api.app import create_app

__all__ = ["create_app"]
