"""Dialect: what a vendor dialect hands the app, one value per dialect package (its `DIALECT`).

The app is composed from an explicit list of them (api/compose.py): no discovery, no registry
filled by importing.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter

from kandinsky_serve.api.errors import Renderer
from kandinsky_serve.runtime import Runtime


@dataclass(frozen=True)
class Dialect:
    # the first tag of its routes: errors raised in them are rendered by `render_error`
    name: str
    router: APIRouter
    render_error: Renderer | None = None
    # a task for the server's lifetime (Replicate sends webhooks from one); canceled at shutdown
    background: Callable[[Runtime], Coroutine[Any, Any, None]] | None = None
