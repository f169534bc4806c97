"""Replicate's predictions and files APIs (reference §1), wire-compatible with replicate-python 1.0.7.

Its background task, `webhooks.deliver_webhooks`, drains the webhook outbox for the server's lifetime
(any node sends any prediction's webhooks); the app starts and cancels it.
"""

from __future__ import annotations

from fastapi import APIRouter

from kandinsky_serve.api.dialect import Dialect
from kandinsky_serve.api.dialects.replicate.files import router as files_router
from kandinsky_serve.api.dialects.replicate.problems import render_error
from kandinsky_serve.api.dialects.replicate.router import router as predictions_router
from kandinsky_serve.api.dialects.replicate.webhooks import deliver_webhooks

router = APIRouter()
router.include_router(predictions_router)
router.include_router(files_router)


DIALECT = Dialect("replicate", router, render_error, deliver_webhooks)

__all__ = ["DIALECT", "router"]
