"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from kandinsky_serve.api.state import State
from kandinsky_serve.domain.job import JobState
from kandinsky_serve.metrics import CONTENT_TYPE

router = APIRouter(tags=["native"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(state: State) -> JSONResponse:
    """Ready when the store answers and at least one worker has its model loaded."""
    workers = state.workers.status() if state.workers is not None else []
    try:
        counts = state.service.store.counts()
        store_ok = True
    except Exception:
        counts, store_ok = {}, False
    ready = store_ok and any(w["state"] in ("ready", "busy") for w in workers)
    body = {
        "ready": ready,
        "model": state.service.model.id,
        "store": "ok" if store_ok else "unreachable",
        "queue_depth": counts.get(JobState.QUEUED, 0),
        "workers": workers,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(state: State) -> Response:
    """Prometheus metrics: queue depth, jobs by state, step and batch latency, images, batch sizes."""
    if state.metrics is None:
        return Response(b"", media_type=CONTENT_TYPE)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
