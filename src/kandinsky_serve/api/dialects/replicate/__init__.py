"""Replicate's predictions and files APIs (reference §1), wire-compatible with replicate-python 1.0.7.

`background` drains the webhook outbox for the server's lifetime (any node sends any prediction's
webhooks); the app starts and cancels it.
"""

from __future__ import annotations

from fastapi import APIRouter

from kandinsky_serve.api.dialect import Dialect
from kandinsky_serve.api.dialects.replicate.files import router as files_router
from kandinsky_serve.api.dialects.replicate.problems import render_error
from kandinsky_serve.api.dialects.replicate.router import router as predictions_router
from kandinsky_serve.api.dialects.replicate.webhooks import deliver_webhooks
from kandinsky_serve.api.state import AppState

router = APIRouter()
router.include_router(predictions_router)
router.include_router(files_router)


async def background(state: AppState) -> None:
    await deliver_webhooks(state)


DIALECT = Dialect("replicate", router, render_error, background)

__all__ = ["DIALECT", "background", "router"]
