"""What the app holds while it runs, built in the lifespan and reached through dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from kandinsky_serve.auth.keys import KeyStore, RateLimiter
from kandinsky_serve.files.service import FileService
from kandinsky_serve.metrics import Metrics
from kandinsky_serve.notify import LocalNotifier
from kandinsky_serve.service import JobService, WorkerPool
from kandinsky_serve.settings import Settings
from kandinsky_serve.worker.janitor import Janitor


@dataclass
class AppState:
    settings: Settings
    service: JobService
    notifier: LocalNotifier
    workers: WorkerPool | None
    janitor: Janitor | None
    keys: KeyStore
    limiter: RateLimiter
    url_secret: bytes = b""
    metrics: Metrics | None = None
    files: FileService | None = None  # uploads (Replicate's files API)


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.ks
    return state


def job_service(request: Request) -> JobService:
    return app_state(request).service


State = Annotated[AppState, Depends(app_state)]
Service = Annotated[JobService, Depends(job_service)]
