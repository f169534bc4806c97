"""The runtime as routes reach it: built by runtime.py in the app's lifespan, read through dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from kandinsky_serve.runtime import Runtime
from kandinsky_serve.service import JobService


def app_state(request: Request) -> Runtime:
    state: Runtime = request.app.state.ks
    return state


def job_service(request: Request) -> JobService:
    return app_state(request).service


State = Annotated[Runtime, Depends(app_state)]
Service = Annotated[JobService, Depends(job_service)]
