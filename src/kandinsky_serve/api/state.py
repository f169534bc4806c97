"""What the app holds while it runs, built in the lifespan and reached through dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from kandinsky_serve.notify import LocalNotifier
from kandinsky_serve.service import JobService
from kandinsky_serve.settings import Settings
from kandinsky_serve.worker.janitor import Janitor
from kandinsky_serve.worker.supervisor import Supervisor


@dataclass
class AppState:
    settings: Settings
    service: JobService
    notifier: LocalNotifier
    supervisor: Supervisor | None
    janitor: Janitor | None


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.ks
    return state


def job_service(request: Request) -> JobService:
    return app_state(request).service


def owner(request: Request) -> str:
    """The caller's identity, which owns the jobs it creates.

    API keys arrive with the keys-and-credits work; until then every caller is the one local user,
    and `serve` listens on 127.0.0.1 unless told otherwise.
    """
    return "local"


State = Annotated[AppState, Depends(app_state)]
Service = Annotated[JobService, Depends(job_service)]
Owner = Annotated[str, Depends(owner)]
