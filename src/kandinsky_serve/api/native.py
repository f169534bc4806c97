"""The native API: the canonical request in, the canonical job out, plus live progress."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from kandinsky_serve.api.auth import CallerDep, Owner
from kandinsky_serve.api.errors import ON_READ, ON_SUBMIT, native_errors, not_found
from kandinsky_serve.api.idempotency import idempotency_key
from kandinsky_serve.api.state import Service, State
from kandinsky_serve.api.urls import file_url, valid_signature
from kandinsky_serve.domain.errors import ErrorCode
from kandinsky_serve.domain.events import ProgressEvent
from kandinsky_serve.domain.job import Job
from kandinsky_serve.domain.request import GenerationRequest
from kandinsky_serve.service import JobService

router = APIRouter(prefix="/v1", tags=["native"])

_INPUT_BYTES = {"image", "mask", "hint", "fuse"}


def _progress(event: ProgressEvent) -> dict[str, Any]:
    return {"stage": event.stage.value, "step": event.step, "total": event.total}


def job_view(request: Request, job: Job, service: JobService | None = None) -> dict[str, Any]:
    progress = service.notifier.progress(job.id) if service is not None and not job.state.terminal else None
    outputs = [{"url": file_url(request, o.key), "seed": o.seed, "content_type": o.content_type} for o in job.outputs]
    return {
        "id": job.id,
        "state": job.state.value,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "completed_at": job.completed_at.isoformat() if job.completed_at else None,
        "attempts": job.attempts,
        "request": job.request.model_dump(mode="json", exclude=_INPUT_BYTES),
        "outputs": outputs,
        "error": {"code": job.error_code.value, "message": job.error_message} if job.error_code else None,
        "progress": _progress(progress) if progress else None,
        "metrics": {"queue_time": job.queue_time, "predict_time": job.predict_time, "total_time": job.total_time},
        "data_removed": job.data_removed,
    }


@router.post("/jobs", status_code=201, responses=native_errors(*ON_SUBMIT))
async def create_job(
    body: GenerationRequest, request: Request, service: Service, caller: CallerDep, wait: float = 0
) -> dict[str, Any]:
    """Queue a generation. With `?wait=N` the response waits up to N seconds for the result."""
    submit = partial(service.submit, idempotency_key=idempotency_key(request))
    job = await anyio.to_thread.run_sync(submit, body, caller)
    if wait > 0:
        job = await service.wait(job.id, caller.owner, min(wait, 600))
    return job_view(request, job, service)


@router.get("/jobs/{job_id}", responses=native_errors(*ON_READ))
def get_job(job_id: str, request: Request, service: Service, owner: Owner) -> dict[str, Any]:
    """The job, with its log lines (batching, progress in tqdm style)."""
    view = job_view(request, service.get(job_id, owner), service)
    view["logs"] = "\n".join(e.message for e in service.store.events(job_id) if e.message)
    return view


@router.get("/jobs", responses=native_errors(*ON_READ, ErrorCode.INVALID_INPUT))  # limit, cursor
def list_jobs(
    request: Request, service: Service, owner: Owner, cursor: str | None = None, limit: int = 50
) -> dict[str, Any]:
    page = service.list(owner, limit=max(1, min(limit, 100)), cursor=cursor)
    return {"jobs": [job_view(request, job) for job in page.jobs], "next_cursor": page.next_cursor}


@router.post("/jobs/{job_id}/cancel", responses=native_errors(*ON_READ))
def cancel_job(job_id: str, request: Request, service: Service, owner: Owner) -> dict[str, Any]:
    """Cancel: a queued job at once, a running one at its next step."""
    return job_view(request, service.cancel(job_id, owner), service)


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "progress events, then done",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **native_errors(*ON_READ),
    },
)
async def job_events(job_id: str, request: Request, service: Service, owner: Owner) -> StreamingResponse:
    """Server-sent events: `progress` at every step (now and then with a `preview` image as a data
    URI), then one `done` with the final job."""
    service.get(job_id, owner)

    async def stream() -> AsyncIterator[str]:
        last, last_preview = None, None
        while True:
            job = service.get(job_id, owner)
            if job.state.terminal:
                yield f"event: done\ndata: {json.dumps(job_view(request, job))}\n\n"
                return
            progress = service.notifier.progress(job_id)
            if progress is not None and progress != last:
                last = progress
                data: dict[str, Any] = {"state": job.state.value, **_progress(progress)}
                preview = service.notifier.preview(job_id)
                if preview is not None and preview != last_preview:
                    data["preview"] = last_preview = preview
                yield f"event: progress\ndata: {json.dumps(data)}\n\n"
            elif not await service.notifier.wait(job_id, 15.0):
                yield ": keep-alive\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


# only outputs/...: the rest of /v1/files is Replicate's files API (replicate/files.py)
@router.get(
    "/files/outputs/{rest:path}",
    response_class=Response,
    responses={
        200: {
            "description": "the image",
            "content": {
                f"image/{kind}": {"schema": {"type": "string", "format": "binary"}} for kind in ("webp", "jpeg", "png")
            },
        },
        **native_errors(ErrorCode.NOT_FOUND, ErrorCode.INVALID_INPUT, ErrorCode.UNAVAILABLE),
    },
)
def get_file(rest: str, state: State, expires: int = 0, sig: str = "") -> Response:
    """An output, through the signed link a job handed out (no API key needed; it expires)."""
    key = f"outputs/{rest}"
    signed = valid_signature(state.url_secret, key, expires, sig)
    blob = state.service.blobs.get(key) if signed else None
    if blob is None:
        raise not_found("File (or the link has expired)")
    return Response(blob.data, media_type=blob.content_type, headers={"Cache-Control": "private, max-age=3600"})
