"""Eachlabs: `POST /v1/prediction/` (with or without the slash), `GET /v1/prediction/{id}`,
`POST /v1/prediction/{id}/cancel`.

Create takes `{"model": "kandinsky-2.2", "version": "0.0.1", "input": {...}}`; `version` is
ignored (the API reference marks it deprecated). Inputs have Replicate's names and may be strings
(the vendor's own example sends `"512"`) or null (`"seed": null` = random); `webhook_url`,
`webhook_secret` and `fallback_selector` are accepted and ignored, as Eachlabs serves webhooks
only for its workflows. Models: `kandinsky-2.2` and `kandinsky-2.1`, each run by the served model of
its family (404 when none is served).

Statuses: starting, processing, success, error, cancelled. `error` (not `failed`) because the
vendor's own polling loop stops only on `success` or `error`; a failure's `output` is
`{"error_code", "error_message"}`. `output` is the image URL as a string for one image (the
vendor's example prints it as "Output URL"), a list of URLs for several.

The seed the job runs with (the one sent, or the random one drawn for `"seed": null`) is
`metrics.seed` (metrics is an open object: metered models add fields there too) and the first
line of `logs`, "Using seed: N", as the Replicate model Eachlabs re-serves prints it; image i of
several uses seed + i. `input` stays as sent.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from kandinsky_serve.api.auth import CallerDep, Owner
from kandinsky_serve.api.dialect import Dialect
from kandinsky_serve.api.errors import (
    ON_READ,
    ON_SUBMIT,
    Responses,
    error_headers,
    error_responses,
)
from kandinsky_serve.api.fields import FieldMap
from kandinsky_serve.api.idempotency import idempotency_key
from kandinsky_serve.api.json_body import openapi_body, read_object
from kandinsky_serve.api.state import Service
from kandinsky_serve.api.urls import base_url, file_url
from kandinsky_serve.domain.catalogue import OFFERED, Family
from kandinsky_serve.domain.errors import HTTP_STATUS, ErrorCode, ServeError, invalid
from kandinsky_serve.domain.job import Job, JobState
from kandinsky_serve.domain.meta import EachlabsMeta, ReplicateMeta
from kandinsky_serve.domain.request import (
    MAX_IMAGES,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SIDE,
    MAX_STEPS,
    MIN_SIDE,
    GenerationRequest,
)
from kandinsky_serve.service import JobService

router = APIRouter(tags=["eachlabs"])

MODELS = {"kandinsky-2.2": Family.K22, "kandinsky-2.1": Family.K21}
# Eachlabs input name -> canonical name; errors name them as `input.<name>`
FIELDS = FieldMap(
    {
        "prompt": "prompt",
        "negative_prompt": "negative_prompt",
        "width": "width",
        "height": "height",
        "num_outputs": "num_images",
        "num_inference_steps": "steps",
        "num_inference_steps_prior": "prior_steps",
        "guidance_scale": "guidance_scale",
        "prior_guidance_scale": "prior_guidance_scale",
        "scheduler": "scheduler",
        "seed": "seed",
        "output_format": "output_format",
    },
    prefix="input.",
)
_IGNORED_INPUTS = frozenset({"enable_safety_checker"})
_IGNORED_BODY = frozenset({"version", "webhook_url", "webhook_secret", "fallback_selector"})
# Replicate's defaults for kandinsky-2.2, whose inputs Eachlabs re-serves
_DEFAULTS: dict[str, Any] = {"width": 512, "height": 512, "steps": 75, "prior_steps": 25, "output_format": "webp"}

_STATUS = {
    JobState.QUEUED: "starting",
    JobState.RUNNING: "processing",
    JobState.SUCCEEDED: "success",
    JobState.FAILED: "error",
    JobState.CANCELED: "cancelled",
}
_FAILURE_CODES = {
    ErrorCode.INVALID_INPUT: "INPUT_VALIDATION_ERROR",
    ErrorCode.CONTENT_BLOCKED: "PROVIDER_REJECTED",
    ErrorCode.WORKER_LOST: "WORKER_LOST",
    ErrorCode.TIMEOUT: "EXECUTION_TIMEOUT",
    ErrorCode.OUT_OF_MEMORY: "PROVIDER_SERVER_ERROR",
    ErrorCode.MODEL_UNAVAILABLE: "PROVIDER_SERVER_ERROR",
}
_HTTP = {
    ErrorCode.INVALID_INPUT: 400,
    ErrorCode.OVERLOADED: 429,
}


def render_error(error: ServeError) -> Response:
    message = FIELDS.renamed(error).message
    if error.code is ErrorCode.RATE_LIMITED and error.retry_after is not None:
        message = f"Rate limit exceeded. Please retry after {round(error.retry_after)} seconds."
    status = _HTTP.get(error.code, error.http_status)
    return JSONResponse({"error": message}, status_code=status, headers=error_headers(error))


class EachlabsError(BaseModel):
    """Eachlabs' errors: one sentence, naming `input.<name>` when an input is wrong."""

    error: str


def eachlabs_errors(*codes: ErrorCode) -> Responses:
    return error_responses(EachlabsError, lambda code: _HTTP.get(code, HTTP_STATUS[code]), codes)


# for the OpenAPI document only: `create` reads the JSON itself, so errors keep Eachlabs' shape.
# Numbers may be text, as the vendor's own example sends them ("512"); "" and null mean "not set".
_Text = Annotated[str, Field(pattern=r"^\s*([+-]?\d+(\.\d*)?)?\s*$")]
_Side = Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE)] | _Text | None
_Steps = Annotated[int, Field(ge=1, le=MAX_STEPS)] | _Text | None
_Scale = Annotated[float, Field(ge=0, le=50)] | _Text | None
_Prompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)] | None


class EachlabsInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: _Prompt = None
    negative_prompt: _Prompt = None
    width: _Side = Field(default=None, description="default 512")
    height: _Side = Field(default=None, description="default 512")
    num_outputs: Annotated[int, Field(ge=1, le=MAX_IMAGES)] | _Text | None = None
    num_inference_steps: _Steps = Field(default=None, description="default 75")
    num_inference_steps_prior: _Steps = Field(default=None, description="default 25")
    guidance_scale: _Scale = None
    prior_guidance_scale: _Scale = None
    scheduler: str | None = Field(default=None, description=f"2.2: {', '.join(OFFERED[Family.K22])}")
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | _Text | None = Field(default=None, description="null: random")
    # in OpenAI's order: typing caches equal Literal unions, so another order would leak into its schema
    output_format: Literal["png", "jpeg", "webp"] | None = Field(default=None, description="default webp")
    enable_safety_checker: Any = Field(default=None, description="accepted and ignored")


class EachlabsPrediction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Literal["kandinsky-2.2", "kandinsky-2.1"] = Field(description="one this server serves")
    version: Any = Field(default=None, description="ignored (deprecated by Eachlabs)")
    input: EachlabsInput | None = None
    webhook_url: Any = Field(default=None, description="accepted and ignored (Eachlabs sends webhooks for workflows)")
    webhook_secret: Any = Field(default=None, description="accepted and ignored")
    fallback_selector: Any = Field(default=None, description="accepted and ignored")


def to_request(body: dict[str, Any], service: JobService) -> GenerationRequest:
    model = body.get("model")
    if not model:
        raise invalid("model", "model field is required")
    family = MODELS.get(str(model))
    served = service.serving(family) if family is not None else None
    if served is None:
        what = "not found" if family is None else "not served here"
        raise ServeError(ErrorCode.NOT_FOUND, f"Model {model} {what}; this server serves {_names(service)}.")
    unknown = [key for key in body if key not in ("model", "input") and key not in _IGNORED_BODY]
    if unknown:
        raise invalid(unknown[0], "is not a field of a prediction")
    given = body.get("input") or {}
    if not isinstance(given, dict):
        raise invalid("input", "must be an object of model inputs")
    fields: dict[str, Any] = {**_DEFAULTS, "model": served.id}
    for name, value in given.items():
        if name in _IGNORED_INPUTS:
            continue
        canonical = FIELDS.canonical(name)
        if canonical is None:
            raise invalid(f"input.{name}", f"is not an input of {model}")
        # forms and the vendor's example send "" and null for "not set"
        if value is not None and (value != "" or name == "prompt"):
            fields[canonical] = value
    return GenerationRequest.parse(fields)


def _names(service: JobService) -> str:
    """The Eachlabs model names of the models served here."""
    return ", ".join(name for name, family in MODELS.items() if service.serving(family) is not None)


_CREATE_ERRORS = eachlabs_errors(*ON_SUBMIT, ErrorCode.NOT_FOUND)  # NOT_FOUND: a model not served here


@router.post("/v1/prediction/", responses=_CREATE_ERRORS, openapi_extra=openapi_body(EachlabsPrediction))
@router.post("/v1/prediction", include_in_schema=False)
async def create(request: Request, service: Service, caller: CallerDep) -> dict[str, Any]:
    """Queue a prediction; poll GET /v1/prediction/{predictionID} until success or error."""
    body = await read_object(request)
    once = idempotency_key(request)

    def queue() -> Job:
        generation = to_request(body, service)
        meta = EachlabsMeta(model=body["model"], input=body.get("input") or {})
        return service.submit(generation, caller, meta=meta, idempotency_key=once)

    job = await anyio.to_thread.run_sync(queue)
    return {"status": "success", "message": "Prediction created successfully", "predictionID": job.id}


def _view(request: Request, job: Job) -> dict[str, Any]:
    urls = [file_url(request, output.key) for output in job.outputs]
    output: Any = urls[0] if len(urls) == 1 else urls or None
    if job.state in (JobState.FAILED, JobState.CANCELED):
        code = _FAILURE_CODES.get(job.error_code, "PROVIDER_FAILED") if job.error_code else "PROVIDER_FAILED"
        output = {"error_code": code, "error_message": job.error_message or f"The prediction {job.state.value}."}
    link = f"{base_url(request)}/v1/prediction/{job.id}"
    predict_time = round(job.predict_time, 3) if job.predict_time is not None else None
    logs = [f"Using seed: {job.request.seed}"] if job.request.seed is not None else []
    if job.error_message:
        logs.append(job.error_message)
    return {
        "id": job.id,
        "input": job.meta.input if isinstance(job.meta, EachlabsMeta | ReplicateMeta) else {},
        "status": _STATUS[job.state],
        "output": output,
        "logs": "\n".join(logs),
        "metrics": {
            "predict_time": predict_time,
            "cost": job.price if job.state is JobState.SUCCEEDED else 0,
            "seed": job.request.seed,
        },
        "urls": {"get": link, "cancel": f"{link}/cancel"},
    }


def _found(service: JobService, prediction_id: str, owner: str) -> Job:
    try:
        return service.get(prediction_id, owner)
    except ServeError as error:
        if error.code is ErrorCode.NOT_FOUND:
            raise ServeError(ErrorCode.NOT_FOUND, "Prediction not found") from None
        raise


@router.get("/v1/prediction/{prediction_id}", responses=eachlabs_errors(*ON_READ))
def get(prediction_id: str, request: Request, service: Service, owner: Owner) -> dict[str, Any]:
    return _view(request, _found(service, prediction_id, owner))


@router.post("/v1/prediction/{prediction_id}/cancel", responses=eachlabs_errors(*ON_READ))
def cancel(prediction_id: str, request: Request, service: Service, owner: Owner) -> dict[str, Any]:
    _found(service, prediction_id, owner)
    return _view(request, service.cancel(prediction_id, owner))


DIALECT = Dialect("eachlabs", router, render_error)
