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
from kandinsky_serve.domain.catalogue import DEFAULT, OFFERED
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
    progress = service.progress(job.id) if service is not None and not job.state.terminal else None
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
    view["logs"] = "\n".join(service.logs(job_id))
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
    await anyio.to_thread.run_sync(service.get, job_id, owner)  # NOT_FOUND before the stream begins

    async def stream() -> AsyncIterator[str]:
        # watching from before the first read: no step or change in between is lost; the store is
        # read again only when the job's record changes (or after a quiet spell), not at every step
        with service.watch(job_id, steps=True) as watch:
            job = await anyio.to_thread.run_sync(service.get, job_id, owner)
            while not job.state.terminal:
                update = await watch.next(15.0)
                if update is not None and update.progress is not None:
                    data: dict[str, Any] = {"state": job.state.value, **_progress(update.progress)}
                    if update.preview is not None:
                        data["preview"] = update.preview
                    yield f"event: progress\ndata: {json.dumps(data)}\n\n"
                    continue
                if update is None:  # quiet: keep the connection, and look (a message may have been lost)
                    yield ": keep-alive\n\n"
                job = await anyio.to_thread.run_sync(service.get, job_id, owner)
            yield f"event: done\ndata: {json.dumps(job_view(request, job))}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/models", responses=native_errors(ErrorCode.UNAUTHORIZED, ErrorCode.UNAVAILABLE))
def list_models(service: Service, _: Owner) -> dict[str, Any]:
    """The models served here, the default first (a job's `model` names one by id or alias), and
    whether each has a worker ready. In OpenAI's list shape too (`object`, `data[].id`, `owned_by`), so
    `openai.models.list()` shows what its `model` can name."""
    entries = {entry.id: entry for entry in service.models}
    data = []
    for status in service.model_status():
        entry = entries[str(status["id"])]
        data.append(
            {
                "id": entry.id,
                "object": "model",
                "created": 0,
                "owned_by": "kandinsky-serve",
                **status,
                "description": entry.description,
                "aliases": list(entry.aliases),
                "tasks": sorted(task.value for task in entry.tasks),
                "schedulers": list(OFFERED[entry.family]),
                "default_scheduler": DEFAULT[entry.family],
            }
        )
    return {"object": "list", "data": data}


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
    blob = state.service.reader.get(key) if signed else None
    if blob is None:
        raise not_found("File (or the link has expired)")
    return Response(blob.data, media_type=blob.content_type, headers={"Cache-Control": "private, max-age=3600"})
