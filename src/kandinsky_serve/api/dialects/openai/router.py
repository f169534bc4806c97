"""`POST /v1/images/generations` and `POST /v1/images/edits`, answered when the images are ready.

OpenAI's Images API is synchronous: the response carries the images. The job is queued like any
other and the request waits for it; a wait that runs out, or a client that gives up (the SDK's
`timeout=`), cancels the job, so no GPU time goes to images nobody will receive.
"""

from __future__ import annotations

import base64
import logging
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, File, Form, Request, UploadFile
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from kandinsky_serve.api.auth import CallerDep
from kandinsky_serve.api.dialects.openai import translate
from kandinsky_serve.api.dialects.openai.problems import openai_errors
from kandinsky_serve.api.dialects.openai.translate import Common, ResponseFormat
from kandinsky_serve.api.disconnect import client_gone
from kandinsky_serve.api.errors import ON_RUN, ON_SUBMIT
from kandinsky_serve.api.state import Service
from kandinsky_serve.api.urls import file_url
from kandinsky_serve.auth.caller import Caller
from kandinsky_serve.domain import catalogue
from kandinsky_serve.domain.catalogue import Weights
from kandinsky_serve.domain.errors import ErrorCode, ServeError, invalid
from kandinsky_serve.domain.job import Job, JobState
from kandinsky_serve.domain.meta import OpenAIMeta
from kandinsky_serve.domain.request import MAX_IMAGES, MAX_SEED, GenerationRequest
from kandinsky_serve.service import JobService

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/images", tags=["openai"])

# the openai SDK's own default timeout; a caller that waits longer than this has set its own
WAIT_SECONDS = 600.0
MODEL_DESCRIPTION = (
    "a model served here (GET /v1/models lists them), kandinsky-2.2 or kandinsky-2.1 for the served model of "
    "that family, or any other name (dall-e-3, gpt-image-1...) for the default model"
)


def _not_a_boolean(value: object) -> object:
    if isinstance(value, bool):  # pydantic would read true as 1: a caller's mistake, not a number
        raise ValueError("Input should be a valid integer, not a boolean")
    return value


NOT_A_BOOLEAN = BeforeValidator(_not_a_boolean)  # after an int's Field(...), which it wraps

# 64 to 2048, written out for the schema
_SIDE = "(6[4-9]|[7-9][0-9]|[1-9][0-9]{2}|1[0-9]{3}|20[0-3][0-9]|204[0-8])"
SIZE_PATTERN = rf"^\s*{_SIDE}\s*[xX×]\s*{_SIDE}\s*$|^\s*[aA][uU][tT][oO]\s*$"

Quality = Literal["auto", "low", "medium", "high", "standard", "hd", "xhigh", "max"]
ImageFormat = Literal["png", "jpeg", "webp"]


class GenerationBody(BaseModel):
    """OpenAI's image generation request. Unknown fields are accepted and ignored, as OpenAI's SDK
    sends fields a server may not implement (vLLM does the same)."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(description="what to draw")
    model: str | None = Field(default=None, description=MODEL_DESCRIPTION)
    n: Annotated[int, Field(ge=1, le=MAX_IMAGES), NOT_A_BOOLEAN] | None = None
    size: str | None = Field(
        default=None,
        description="WIDTHxHEIGHT (64 to 2048 a side) or auto (1024x1024)",
        json_schema_extra={"pattern": SIZE_PATTERN},  # documented only: translate.parse_size checks it
    )
    quality: Quality | None = Field(default=None, description="decoder steps: low 25, medium 50, high 100")
    response_format: ResponseFormat | None = None
    output_format: ImageFormat | None = None
    output_compression: Annotated[int, Field(ge=0, le=100), NOT_A_BOOLEAN] | None = None
    style: str | None = Field(default=None, description="accepted and ignored")
    background: str | None = Field(default=None, description="accepted; outputs are always opaque")
    moderation: str | None = Field(default=None, description="accepted and ignored")
    user: str | None = Field(default=None, description="accepted and ignored")
    # strict: `"stream": 0` is not a boolean, and reading it as false would hide the caller's mistake
    stream: StrictBool | None = Field(
        default=None,
        description="only false: partial images are not streamed",
        json_schema_extra={"enum": [False, None]},  # documented only: translate refuses true, saying why
    )
    seed: Annotated[int, Field(ge=0, le=MAX_SEED), NOT_A_BOOLEAN] | None = Field(
        default=None, description="extension: image i uses seed + i"
    )
    negative_prompt: str | None = Field(default=None, description="extension: what to steer away from")


class ImageData(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None
    seed: int | None = Field(default=None, description="extension: the seed this image was made with")


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    background: str | None = None
    output_format: str | None = None
    size: str | None = None
    quality: str | None = None


# NOT_FOUND: an image removed (by a retention of seconds) before it could be sent
_ERRORS = openai_errors(*ON_SUBMIT, *ON_RUN, ErrorCode.NOT_FOUND)


@router.post("/generations", response_model=ImagesResponse, response_model_exclude_none=True, responses=_ERRORS)
async def generations(body: GenerationBody, request: Request, service: Service, caller: CallerDep) -> dict[str, Any]:
    """Create images from a prompt (OpenAI `images.generate`)."""
    if body.model_extra:
        log.debug("openai generations: ignoring %s", sorted(body.model_extra))
    params = Common(**body.model_dump(include=set(Common.__dataclass_fields__)))
    canonical = translate.generation(params)
    return await _run(request, service, caller, canonical, params)


@router.post("/edits", response_model=ImagesResponse, response_model_exclude_none=True, responses=_ERRORS)
async def edits(
    request: Request,
    service: Service,
    caller: CallerDep,
    prompt: Annotated[str, Form(description="what the edited image should show")],
    image: Annotated[list[UploadFile] | None, File(description="the image to edit (PNG, JPEG or WebP)")] = None,
    images: Annotated[list[UploadFile] | None, File(alias="image[]", description="the SDK's name for image")] = None,
    mask: Annotated[UploadFile | None, File(description="transparent (alpha 0) pixels mark what to edit")] = None,
    model: Annotated[str | None, Form(description=MODEL_DESCRIPTION)] = None,
    n: Annotated[int | None, Form(ge=1, le=MAX_IMAGES)] = None,
    size: Annotated[str | None, Form(description="WIDTHxHEIGHT or auto (the image's own size)")] = None,
    quality: Annotated[Quality | None, Form()] = None,
    response_format: Annotated[ResponseFormat | None, Form()] = None,
    output_format: Annotated[ImageFormat | None, Form()] = None,
    output_compression: Annotated[int | None, Form(ge=0, le=100)] = None,
    stream: Annotated[bool | None, Form(description="only false")] = None,
    seed: Annotated[int | None, Form(ge=0, description="extension: image i uses seed + i")] = None,
    negative_prompt: Annotated[str | None, Form(description="extension")] = None,
    strength: Annotated[float | None, Form(gt=0, le=1, description="extension: img2img strength")] = None,
) -> dict[str, Any]:
    """Edit an image (OpenAI `images.edit`): inpaint where the mask is transparent, or img2img
    without a mask. Other OpenAI fields (background, input_fidelity, user...) are ignored."""
    uploads = [*(image or []), *(images or [])]
    if not uploads:
        raise invalid("image", "is required: send the image to edit as a file part")
    if len(uploads) > 1:
        raise invalid("image", f"got {len(uploads)} images; this server edits one image at a time")
    limit = service.settings.max_input_bytes
    picture = await _read(uploads[0], "image", limit)
    matte = await _read(mask, "mask", limit) if mask is not None else None
    params = Common(
        prompt=prompt,
        model=model,
        n=n,
        size=size,
        quality=quality,
        response_format=response_format,
        output_format=output_format,
        output_compression=output_compression,
        stream=stream,
        seed=seed,
        negative_prompt=negative_prompt,
        strength=strength,
    )
    canonical = await anyio.to_thread.run_sync(translate.edit, params, picture, matte)
    return await _run(request, service, caller, canonical, params)


async def _read(upload: UploadFile, field: str, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ServeError(ErrorCode.PAYLOAD_TOO_LARGE, f"{field}: the file is larger than {limit} bytes", field=field)
    if not data:
        raise invalid(field, "is an empty file")
    return data


async def _run(
    request: Request, service: JobService, caller: Caller, canonical: GenerationRequest, params: Common
) -> dict[str, Any]:
    meta = OpenAIMeta(model_asked=params.model)
    canonical = canonical.model_copy(update={"model": served_model(service, params.model)})
    job = await service.run_sync(canonical, caller, meta, WAIT_SECONDS, abandoned=client_gone(request))
    if job.state is JobState.CANCELED:
        raise ServeError(ErrorCode.CANCELED, "the generation was canceled")
    if job.state is JobState.FAILED:
        raise ServeError(job.error_code or ErrorCode.GENERATION_FAILED, job.error_message or "the generation failed")
    data = await anyio.to_thread.run_sync(_data, request, service, job, translate.response_format(params))
    return translate.images_response(data, job.request, params.quality, job.created_at.timestamp())


def served_model(service: JobService, asked: str | None) -> str | None:
    """The served model a request's `model` means (None: the default). Code written for OpenAI names
    OpenAI's models, so a name that is none of ours runs on the default model; one of ours that is
    not served here is a 404 (model_not_found) naming what is."""
    if asked is None:
        return None
    if service.serves(asked):
        return service.named(asked).id
    entry = catalogue.find(asked)
    if entry is None:
        return None
    if entry.weights is Weights.HUB:  # a public Kandinsky name: the served model of its family runs it
        return service.for_family(entry.family, f"Model {asked}").id
    return service.named(asked).id  # NOT_FOUND, naming what is served


def _data(request: Request, service: JobService, job: Job, fmt: ResponseFormat) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for output in job.outputs:
        item: dict[str, Any] = {"revised_prompt": job.request.prompt, "seed": output.seed}
        if fmt == "url":
            item["url"] = file_url(request, output.key)
        else:
            blob = service.reader.get(output.key)
            if blob is None:  # removed between completion and now: only a retention of seconds does that
                raise ServeError(ErrorCode.NOT_FOUND, "the image was removed before it could be sent")
            item["b64_json"] = base64.b64encode(blob.data).decode("ascii")
        items.append(item)
    return items
