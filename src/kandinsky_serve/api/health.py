"""Liveness, readiness and metrics.

`/readyz` and `/metrics` name worker pids, hosts, devices and the queue depth: where API keys are
required they need one too, unless KS_PUBLIC_PROBES opens them (for probes and scrapers that cannot
send a header). `/healthz` says only that the process is up, and is always open (liveness).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from kandinsky_serve.api.auth import authenticate
from kandinsky_serve.api.errors import RETRY_AFTER_HEADER, NativeError, Responses, native_errors
from kandinsky_serve.api.state import State, app_state
from kandinsky_serve.domain.errors import ErrorCode
from kandinsky_serve.domain.job import JobState
from kandinsky_serve.metrics import CONTENT_TYPE

router = APIRouter(tags=["native"])


def probe_access(request: Request) -> None:
    """A valid key where keys are required (authenticate knows when), unless probes are public."""
    if not app_state(request).settings.public_probes:
        authenticate(request)


class ModelReadiness(BaseModel):
    id: str
    family: str
    default: bool = Field(description="the model of requests that name none")
    ready: bool = Field(description="at least one of its workers has it loaded")
    workers: int = Field(description="its workers that are ready or busy")


class Readiness(BaseModel):
    ready: bool
    model: str = Field(description="the default model")
    models: list[ModelReadiness] = Field(description="every served model, the default first")
    store: str = Field(description="ok, or unreachable")
    queue_depth: int
    workers: list[dict[str, Any]] = Field(description="each worker: pid, host, device, state")


_PROBE_ERRORS: Responses = native_errors(ErrorCode.UNAUTHORIZED, ErrorCode.UNAVAILABLE)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    dependencies=[Depends(probe_access)],
    response_model=Readiness,
    responses={
        **_PROBE_ERRORS,
        503: {
            "model": Readiness | NativeError,
            "description": "Not ready (a served model has no worker with it loaded, or the store does not answer)",
            "headers": RETRY_AFTER_HEADER,
        },
    },
)
def readyz(state: State) -> JSONResponse:
    """Ready when the store answers and every served model has a worker with it loaded."""
    workers = state.workers.status() if state.workers is not None else []
    try:
        counts = state.service.counts()
        store_ok = True
    except Exception:
        counts, store_ok = {}, False
    models = state.service.model_status(workers)
    ready = store_ok and all(model["ready"] for model in models)
    body = {
        "ready": ready,
        "model": state.service.model.id,
        "models": models,
        "store": "ok" if store_ok else "unreachable",
        "queue_depth": counts.get(JobState.QUEUED, 0),
        "workers": workers,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get(
    "/metrics",
    dependencies=[Depends(probe_access)],
    response_class=Response,
    responses={
        200: {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}},
        **_PROBE_ERRORS,
    },
)
def metrics(state: State) -> Response:
    """Prometheus metrics: queue depth, jobs by state, step and batch latency, images, batch sizes."""
    if state.metrics is None:
        return Response(b"", media_type=CONTENT_TYPE)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
