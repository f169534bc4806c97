"""The `kandinsky-serve` command. Thin: it parses options and calls the engine, the server or the client."""

from kandinsky_serve.cli import bench, generate, keys, server, warmup  # noqa: F401  (each registers its commands)
from kandinsky_serve.cli.app import app, main

__all__ = ["app", "main"]
