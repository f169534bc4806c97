"""Segmind v2: the async queue. `POST /v2/{slug}` queues; poll `/v2/requests/{id}/status`, then
fetch `/v2/requests/{id}` (`/v1/requests/{id}` is the v1-compatible poll URL). A FAILED request
answers 422 on both, with its body, as Segmind's gateway does and the SDK expects.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from kandinsky_serve.api.dialects.segmind.bodies import any_slug_body
from kandinsky_serve.api.dialects.segmind.slugs import to_request
from kandinsky_serve.api.dialects.segmind.wire import SegmindCaller, json_body, router, segmind_responses
from kandinsky_serve.api.errors import ON_READ, ON_SUBMIT
from kandinsky_serve.api.fetch import run_with_fetches
from kandinsky_serve.api.idempotency import idempotency_key
from kandinsky_serve.api.state import Service
from kandinsky_serve.api.urls import base_url, file_url
from kandinsky_serve.domain.errors import ErrorCode, ServeError
from kandinsky_serve.domain.job import Job, JobState
from kandinsky_serve.domain.meta import SegmindMeta
from kandinsky_serve.service import JobService

STATUS = {
    JobState.QUEUED: "QUEUED",
    JobState.RUNNING: "PROCESSING",
    JobState.SUCCEEDED: "COMPLETED",
    JobState.FAILED: "FAILED",
    JobState.CANCELED: "FAILED",
}


def metrics(job: Job) -> dict[str, float]:
    times = {"inference_time": job.predict_time, "queue_time": job.queue_time, "total_time": job.total_time}
    return {name: round(value, 3) for name, value in times.items() if value is not None}


def _links(request: Request, job_id: str) -> dict[str, str]:
    base = base_url(request)
    return {
        "request_id": job_id,
        "status_url": f"{base}/v2/requests/{job_id}/status",
        "response_url": f"{base}/v2/requests/{job_id}",
    }


def _finished(body: dict[str, Any], job: Job) -> JSONResponse:
    return JSONResponse(body, status_code=422 if STATUS[job.state] == "FAILED" else 200)


_POLL_RESPONSES = {
    **segmind_responses(*ON_READ),
    422: {"description": "the request FAILED: the same body, with its error", "content": {"application/json": {}}},
}


def _visible(service: JobService, job_id: str, owner: str) -> Job:
    job = service.get(job_id, owner)
    if job.data_removed:  # Segmind keeps results for an hour, then the request is gone
        raise ServeError(ErrorCode.NOT_FOUND, f"Request {job_id} not found.")
    return job


@router.post("/v2/{slug}", responses=segmind_responses(*ON_SUBMIT, ErrorCode.NOT_FOUND), openapi_extra=any_slug_body())
async def submit(slug: str, request: Request, service: Service, caller: SegmindCaller) -> dict[str, Any]:
    """Queue a request; poll status_url, then fetch response_url."""
    body = await json_body(request)
    once = idempotency_key(request)

    def queue() -> Job:
        generation = to_request(slug, body, service)
        return service.submit(generation, caller, meta=SegmindMeta(slug=slug), idempotency_key=once)

    job = await run_with_fetches(service.settings, queue)
    return {**_links(request, job.id), "status": "QUEUED", "poll_url": f"{base_url(request)}/v1/requests/{job.id}"}


@router.get("/v2/requests/{job_id}/status", responses=_POLL_RESPONSES)
def status(job_id: str, request: Request, service: Service, caller: SegmindCaller) -> JSONResponse:
    job = _visible(service, job_id, caller.owner)
    body: dict[str, Any] = {"status": STATUS[job.state], **_links(request, job_id), "metrics": metrics(job)}
    if job.error_message:
        body["error"] = job.error_message
    return _finished(body, job)


@router.get("/v2/requests/{job_id}", responses=_POLL_RESPONSES)
@router.get("/v1/requests/{job_id}", responses=_POLL_RESPONSES)
def result(job_id: str, request: Request, service: Service, caller: SegmindCaller) -> JSONResponse:
    job = _visible(service, job_id, caller.owner)
    urls = [file_url(request, output.key) for output in job.outputs]
    body = {
        "status": STATUS[job.state],
        "request_id": job_id,
        "output": urls[0] if urls else None,
        "images": urls,
        "seeds": [output.seed for output in job.outputs],
        "metrics": metrics(job),
        "error": job.error_message,
    }
    return _finished(body, job)
