"""Segmind's request bodies, for the OpenAPI document only.

The routes read their JSON themselves (`wire.json_body`, then `slugs.to_request`), so that every
error comes in Segmind's shape and status; these models describe that JSON to clients and fuzzers,
one per kind of slug, and are never used to parse it. Numbers sent as strings, which the routes
accept as the old SDK sent them, are left out of the description.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kandinsky_serve.api.dialects.segmind.slugs import SLUGS
from kandinsky_serve.api.json_body import openapi_body
from kandinsky_serve.domain.catalogue import OFFERED
from kandinsky_serve.domain.request import MAX_IMAGES, MAX_PROMPT_CHARS, MAX_SEED, MAX_SIDE, MAX_STEPS, MIN_SIDE, Task

# what `slugs.flag` reads as true or false
Flag = bool | Literal["true", "false", "1", "0", "yes", "no", ""] | Literal[0, 1]
Image = str  # an http(s) URL, a data URI or bare base64
_IMAGE = "an http(s) URL, a data URI or bare base64"


class Txt2Img(BaseModel):
    """Every slug's parameters; null is the same as leaving one out."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    img_width: int | None = Field(
        default=None, ge=MIN_SIDE, le=MAX_SIDE, description="default: the input image's width, else 768 (2.1: 512)"
    )
    img_height: int | None = Field(
        default=None, ge=MIN_SIDE, le=MAX_SIDE, description="default: the input image's height, else 768 (2.1: 512)"
    )
    samples: int | None = Field(
        default=None, ge=1, le=MAX_IMAGES, description="images to generate (v1: the first is sent)"
    )
    num_inference_steps: int | None = Field(default=None, ge=1, le=MAX_STEPS, description="default 20 (2.1: 25)")
    prior_steps: int | None = Field(default=None, ge=1, le=MAX_STEPS, description="default 25")
    guidance_scale: float | None = Field(default=None, ge=0, le=50)
    prior_guidance_scale: float | None = Field(default=None, ge=0, le=50)
    seed: int | None = Field(default=None, ge=-1, le=MAX_SEED, description="-1: random; image i uses seed + i")
    scheduler: str | None = Field(default=None, description="see the enum; other common spellings are accepted")
    base64: Flag | None = Field(default=None, description="v1: answer with JSON of base64 images instead of the JPEG")


class Img2Img(Txt2Img):
    image: Image = Field(description=f"the picture to start from: {_IMAGE}")
    strength: float | None = Field(default=None, gt=0, le=1, description="how much of it to change")


class Inpainting(Txt2Img):
    image: Image = Field(description=f"the picture: {_IMAGE}")
    mask: Image = Field(description=f"white = repaint, black = keep; the picture's size: {_IMAGE}")


class ControlNetDepth(Txt2Img):
    image: Image = Field(description=f"the depth map: {_IMAGE}")


class Fuse(Txt2Img):
    """Mixes `images` (and `prompt`, if given); at least one of them is required."""

    images: list[Image] | None = Field(default=None, description=f"the images to mix, each {_IMAGE}")
    image_weights: list[float] | None = Field(default=None, description="one per image; default: equal shares")
    prompt_weight: float | None = Field(default=None, description="the prompt's weight; default: an equal share")


_BODIES: dict[Task, type[Txt2Img]] = {
    Task.TEXT2IMG: Txt2Img,
    Task.IMG2IMG: Img2Img,
    Task.INPAINT: Inpainting,
    Task.CONTROLNET: ControlNetDepth,
    Task.FUSE: Fuse,
}


def _openapi_extra(model: type[Txt2Img], schedulers: list[str]) -> dict[str, Any]:
    extra = openapi_body(model, required=False)  # an empty body is {} (wire.json_body)
    schema = extra["requestBody"]["content"]["application/json"]["schema"]
    schema["properties"]["scheduler"]["anyOf"] = [{"type": "string", "enum": schedulers}, {"type": "null"}]
    return extra


def request_body(slug_name: str) -> dict[str, Any]:
    """`openapi_extra` for `/v1/{slug}`: the slug's body, with its family's schedulers."""
    slug = SLUGS[slug_name]
    return _openapi_extra(_BODIES[slug.task], list(OFFERED[slug.family]))


class AnySlug(Txt2Img):
    """The parameters of any slug; which of image, mask, strength, images, image_weights and
    prompt_weight a slug takes is in its `/v1/{slug}` body (the others are refused)."""

    image: Image | None = Field(default=None, description=_IMAGE)
    mask: Image | None = Field(default=None, description=_IMAGE)
    strength: float | None = Field(default=None, gt=0, le=1)
    images: list[Image] | None = Field(default=None)
    image_weights: list[float] | None = Field(default=None)
    prompt_weight: float | None = Field(default=None)


def any_slug_body() -> dict[str, Any]:
    """`openapi_extra` for `/v2/{slug}`: one route for every slug."""
    return _openapi_extra(AnySlug, list(dict.fromkeys(name for names in OFFERED.values() for name in names)))
