"""Segmind: v2 async queue (`POST /v2/{slug}`, `/v2/requests/{id}[/status]`) for Kandinsky.

Bodies are Segmind's (img_width, samples, num_inference_steps; numbers may come as strings, as the
old SDK sent them); errors are `{"error": "..."}`; a FAILED request answers 422 with its body.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from kandinsky_serve.api.auth import CallerDep, Owner
from kandinsky_serve.api.errors import error_headers, register_renderer
from kandinsky_serve.api.state import Service
from kandinsky_serve.api.urls import base_url, file_url
from kandinsky_serve.domain.errors import ErrorCode, ServeError
from kandinsky_serve.domain.job import Job, JobState
from kandinsky_serve.domain.request import GenerationRequest, Task
from kandinsky_serve.engine.sources import Family
from kandinsky_serve.service import JobService

router = APIRouter(tags=["segmind"])

# slug -> (family, task, defaults of that Segmind model)
SLUGS: dict[str, tuple[Family, Task, dict[str, Any]]] = {
    "kandinsky2.2-txt2img": (Family.K22, Task.TEXT2IMG, {"steps": 20, "width": 768, "height": 768}),
    "kandinsky2.1-txt2im": (Family.K21, Task.TEXT2IMG, {"steps": 25, "width": 512, "height": 512}),
    "kandinsky2.1-txt2img": (Family.K21, Task.TEXT2IMG, {"steps": 25, "width": 512, "height": 512}),
}

# Segmind's names for canonical fields, so an error names the field the caller sent
FIELDS = {
    "img_width": "width",
    "img_height": "height",
    "samples": "num_images",
    "num_inference_steps": "steps",
    "prior_steps": "prior_steps",
    "guidance_scale": "guidance_scale",
    "prior_guidance_scale": "prior_guidance_scale",
    "negative_prompt": "negative_prompt",
    "prompt": "prompt",
    "seed": "seed",
    "scheduler": "scheduler",
}
_CANONICAL_TO_SEGMIND = {v: k for k, v in FIELDS.items()}
_STATUS = {
    JobState.QUEUED: "QUEUED",
    JobState.RUNNING: "PROCESSING",
    JobState.SUCCEEDED: "COMPLETED",
    JobState.FAILED: "FAILED",
    JobState.CANCELED: "FAILED",
}
_HTTP = {
    ErrorCode.INVALID_INPUT: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.INSUFFICIENT_CREDITS: 406,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.OVERLOADED: 429,
}


def render_error(error: ServeError) -> Response:
    message = error.message
    if error.field in _CANONICAL_TO_SEGMIND and message.startswith(error.field):
        message = _CANONICAL_TO_SEGMIND[error.field] + message[len(error.field) :]
    return JSONResponse({"error": message}, status_code=_HTTP.get(error.code, 500), headers=error_headers(error))


register_renderer("segmind", render_error)


def to_request(slug: str, body: dict[str, Any], service: JobService) -> GenerationRequest:
    if slug not in SLUGS:
        raise ServeError(ErrorCode.NOT_FOUND, f"Model {slug} not found.")
    family, task, defaults = SLUGS[slug]
    if family is not service.model.family:
        raise ServeError(ErrorCode.NOT_FOUND, f"{slug} is not served here; this server runs {service.model.id}.")
    unknown = [key for key in body if key not in FIELDS and key != "base64"]
    if unknown:
        raise ServeError(ErrorCode.INVALID_INPUT, f"{unknown[0]}: is not a parameter of {slug}", field=unknown[0])
    fields: dict[str, Any] = {"task": task, **defaults, "output_format": "jpeg"}
    for name, value in body.items():
        if name in FIELDS and value is not None:
            fields[FIELDS[name]] = value
    if str(fields.get("seed", "")) == "-1":  # Segmind's "random"
        fields.pop("seed")
    if fields.get("negative_prompt") in ("", "NONE"):  # the 2.1 example sends "NONE" for none
        fields.pop("negative_prompt")
    return GenerationRequest.parse(fields)


def _metrics(job: Job) -> dict[str, float]:
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
    return JSONResponse(body, status_code=422 if _STATUS[job.state] == "FAILED" else 200)


def _visible(service: JobService, job_id: str, owner: str) -> Job:
    job = service.get(job_id, owner)
    if job.data_removed:  # Segmind keeps results for an hour, then the request is gone
        raise ServeError(ErrorCode.NOT_FOUND, f"Request {job_id} not found.")
    return job


@router.post("/v2/{slug}")
def submit(slug: str, body: dict[str, Any], request: Request, service: Service, caller: CallerDep) -> dict[str, Any]:
    """Queue a request; poll status_url, then fetch response_url."""
    job = service.submit(to_request(slug, body, service), caller, meta={"dialect": "segmind", "slug": slug})
    links = _links(request, job.id)
    return {**links, "status": "QUEUED", "poll_url": f"{base_url(request)}/v1/requests/{job.id}"}


@router.get("/v2/requests/{job_id}/status")
def status(job_id: str, request: Request, service: Service, owner: Owner) -> JSONResponse:
    job = _visible(service, job_id, owner)
    body: dict[str, Any] = {"status": _STATUS[job.state], **_links(request, job_id), "metrics": _metrics(job)}
    if job.error_message:
        body["error"] = job.error_message
    return _finished(body, job)


@router.get("/v2/requests/{job_id}")
@router.get("/v1/requests/{job_id}")
def result(job_id: str, request: Request, service: Service, owner: Owner) -> JSONResponse:
    job = _visible(service, job_id, owner)
    urls = [file_url(request, output.key) for output in job.outputs]
    body = {
        "status": _STATUS[job.state],
        "request_id": job_id,
        "output": urls[0] if urls else None,
        "images": urls,
        "seeds": [output.seed for output in job.outputs],
        "metrics": _metrics(job),
        "error": job.error_message,
    }
    return _finished(body, job)
