"""Segmind v1: `POST /v1/{slug}` generates and answers with the image in one call.

The body is the JPEG itself (as the old page, the legacy SDK and `run_sync(...).content` expect),
the first image when `samples` > 1. With `base64: true` it is JSON instead; no source documents
that shape, so it follows Segmind's other image models and the v2 result:
`{"image": "<base64 of the first>", "images": [<base64 of each>], "seeds": [...], "status",
"request_id", "metrics", "content_type"}` — `image` for code written against Segmind's single-image
models, `images` so that no sample is lost.

Only the Kandinsky slugs get routes, one each: `/v1/jobs`, `/v1/predictions`, `/v1/images/...`
and the rest belong to other dialects and must not be shadowed by a `/v1/{slug}` catch-all.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from kandinsky_serve.api.dialects.segmind.bodies import request_body
from kandinsky_serve.api.dialects.segmind.slugs import SLUGS, flag, to_request
from kandinsky_serve.api.dialects.segmind.v2 import metrics
from kandinsky_serve.api.dialects.segmind.wire import SegmindCaller, json_body, router, segmind_responses
from kandinsky_serve.api.disconnect import client_gone
from kandinsky_serve.api.errors import ON_RUN, ON_SUBMIT
from kandinsky_serve.api.fetch import run_with_fetches
from kandinsky_serve.api.state import app_state
from kandinsky_serve.domain.errors import ErrorCode, ServeError
from kandinsky_serve.domain.job import JobState
from kandinsky_serve.domain.meta import SegmindMeta

# Longer than any sane Kandinsky job, shorter than a proxy's patience; past it the job is canceled
# (the caller can no longer receive it) and the answer is Segmind's 504. A client that hangs up
# sooner has its job canceled at once.
SYNC_TIMEOUT_S = 300.0


async def generate(slug: str, request: Request, caller: SegmindCaller) -> Response:
    service = app_state(request).service
    body = await json_body(request)
    as_json = flag(body.get("base64"), "base64")
    generation = await run_with_fetches(service.settings, to_request, slug, body, service)
    meta = SegmindMeta(slug=slug, sync=True)
    # the answer is the only way to the images: a client that times out (the SDK's default is 30 s)
    # leaves nothing to fetch, so its job is canceled rather than left to hold up the queue
    job = await service.run_sync(generation, caller, meta, SYNC_TIMEOUT_S, abandoned=client_gone(request))
    if job.state is not JobState.SUCCEEDED:
        code = job.error_code or ErrorCode.GENERATION_FAILED
        raise ServeError(code, job.error_message or f"The request {job.state.value}.")
    images = await anyio.to_thread.run_sync(service.images, job)
    if not images:
        raise ServeError(ErrorCode.NOT_FOUND, f"The images of request {job.id} are no longer kept.")
    headers = {"x-request-id": job.id, "x-seed-value": str(job.outputs[0].seed)}
    if job.predict_time is not None:
        headers["x-generation-time"] = f"{job.predict_time:.3f}"
    if not as_json:
        return Response(images[0].data, media_type=images[0].content_type, headers=headers)
    encoded = [base64.b64encode(image.data).decode("ascii") for image in images]
    content = {
        "image": encoded[0],
        "images": encoded,
        "seeds": [output.seed for output in job.outputs],
        "status": "COMPLETED",
        "request_id": job.id,
        "metrics": metrics(job),
        "content_type": images[0].content_type,
    }
    return JSONResponse(content, headers=headers)


def _endpoint(slug: str) -> Callable[[Request, SegmindCaller], Awaitable[Response]]:
    async def endpoint(request: Request, caller: SegmindCaller) -> Response:
        return await generate(slug, request, caller)

    return endpoint


_IMAGE_OR_JSON = {
    "description": "the first image (JPEG); with `base64` true, JSON with every image in base64",
    "content": {
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {
            "schema": {"type": "object", "required": ["image", "images", "seeds", "status", "request_id"]}
        },
    },
}

for _slug in SLUGS:
    router.add_api_route(
        f"/v1/{_slug}",
        _endpoint(_slug),
        methods=["POST"],
        name=f"segmind_v1_{_slug}",
        summary=f"Segmind v1 {_slug}: generate and answer with the image",
        response_class=Response,
        responses=segmind_responses(*ON_SUBMIT, *ON_RUN, ErrorCode.NOT_FOUND, ok=_IMAGE_OR_JSON),
        openapi_extra=request_body(_slug),
    )
