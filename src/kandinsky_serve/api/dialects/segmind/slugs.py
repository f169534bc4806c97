"""Segmind model slugs and their bodies, translated into the canonical GenerationRequest.

Numbers may come as strings (the old SDK sent them so); `seed: -1` means random; images are URLs,
data URIs or bare base64.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from PIL import Image

from kandinsky_serve.api.fields import FieldMap
from kandinsky_serve.api.inputs import image_bytes
from kandinsky_serve.domain.catalogue import Family
from kandinsky_serve.domain.errors import ErrorCode, ServeError, invalid
from kandinsky_serve.domain.request import MAX_SIDE, MIN_SIDE, GenerationRequest, Task
from kandinsky_serve.service import JobService

# Segmind's name -> canonical name: the parameters every slug takes, then those of each task
_COMMON = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "img_width": "width",
    "img_height": "height",
    "samples": "num_images",
    "num_inference_steps": "steps",
    "prior_steps": "prior_steps",
    "guidance_scale": "guidance_scale",
    "prior_guidance_scale": "prior_guidance_scale",
    "seed": "seed",
    "scheduler": "scheduler",
}
FIELDS: dict[Task, FieldMap] = {
    Task.TEXT2IMG: FieldMap(_COMMON),
    Task.IMG2IMG: FieldMap({**_COMMON, "image": "image", "strength": "strength"}),
    Task.INPAINT: FieldMap({**_COMMON, "image": "image", "mask": "mask"}),
    # `prompt` is an ingredient of the mix too (_fuse_items)
    Task.FUSE: FieldMap({**_COMMON, "images": "fuse"}, parts={"image_weights": ("fuse",), "prompt_weight": ("fuse",)}),
    Task.CONTROLNET: FieldMap({**_COMMON, "image": "hint"}),  # the depth map
}
# parameters that shape the response, not the generation
RESPONSE_ONLY = frozenset({"base64"})
_IMAGES = frozenset({"image", "mask", "hint"})


@dataclass(frozen=True)
class Slug:
    family: Family
    task: Task
    size: int  # the model's default side, used when no input image gives one
    steps: int

    @property
    def fields(self) -> FieldMap:
        return FIELDS[self.task]

    @property
    def accepted(self) -> frozenset[str]:
        return self.fields.accepted | RESPONSE_ONLY


SLUGS: dict[str, Slug] = {
    "kandinsky2.2-txt2img": Slug(Family.K22, Task.TEXT2IMG, 768, 20),
    "kandinsky2.2-img2img": Slug(Family.K22, Task.IMG2IMG, 768, 20),
    "kandinsky2.2-inpainting": Slug(Family.K22, Task.INPAINT, 768, 20),
    "kandinsky2.2-fuse": Slug(Family.K22, Task.FUSE, 768, 20),
    "kandinsky2.2-controlnet-depth": Slug(Family.K22, Task.CONTROLNET, 768, 20),
    # the current page spells it "txt2im"; the old SDK and third-party code "txt2img": serve both
    "kandinsky2.1-txt2im": Slug(Family.K21, Task.TEXT2IMG, 512, 25),
    "kandinsky2.1-txt2img": Slug(Family.K21, Task.TEXT2IMG, 512, 25),
    "kandinsky2.1-img2img": Slug(Family.K21, Task.IMG2IMG, 512, 25),
    "kandinsky2.1-inpainting": Slug(Family.K21, Task.INPAINT, 512, 25),
    "kandinsky2.1-fuse": Slug(Family.K21, Task.FUSE, 512, 25),
}

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


def flag(value: Any, name: str) -> bool:
    """A Segmind boolean: JSON true/false, 1/0 or their strings (one page documents `"1"`)."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise invalid(name, f"must be true or false (got {value!r})")


def find_slug(slug: str, service: JobService) -> tuple[Slug, str]:
    """The slug, and the id of the served model of its family that runs it."""
    if slug not in SLUGS:
        raise ServeError(ErrorCode.NOT_FOUND, f"Model {slug} not found.")
    spec = SLUGS[slug]
    return spec, service.for_family(spec.family, slug).id


def to_request(slug: str, body: dict[str, Any], service: JobService) -> GenerationRequest:
    """The canonical request for a Segmind body; fetches input images given as URLs."""
    spec, model = find_slug(slug, service)
    unknown = [key for key in body if key not in spec.accepted]
    if unknown:
        raise invalid(unknown[0], f"is not a parameter of {slug}")
    flag(body.get("base64"), "base64")  # v2 ignores it, but a bad value is still the caller's mistake
    settings = service.settings
    fields: dict[str, Any] = {"model": model, "task": spec.task, "steps": spec.steps, "output_format": "jpeg"}
    for name, canonical in spec.fields.names.items():
        value = body.get(name)
        if value is None or canonical == "fuse":  # fuse: its ingredients are read together below
            continue
        fields[canonical] = image_bytes(_text(value, name), name, settings) if canonical in _IMAGES else value
    if spec.task is Task.FUSE:
        fields["fuse"] = _fuse_items(body, service)
    if str(fields.get("seed", "")).strip() == "-1":  # Segmind's "random"
        fields.pop("seed")
    if fields.get("negative_prompt") in ("", "NONE"):  # the 2.1 example sends "NONE" for none
        fields.pop("negative_prompt")
    width, height = _default_size(spec, fields)
    fields.setdefault("width", width)
    fields.setdefault("height", height)
    try:
        return GenerationRequest.parse(fields)
    except ServeError as exc:
        # the service's own checks, later, name model, task and scheduler: Segmind's names too
        raise spec.fields.renamed(exc) from None


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise invalid(name, "must be an image URL, a data URI or base64 text")
    return value


def _fuse_items(body: dict[str, Any], service: JobService) -> list[dict[str, Any]]:
    """`images` (with `image_weights`) and `prompt` (with `prompt_weight`) are the ingredients.

    Unweighted ingredients share the mix equally, as the diffusers interpolation examples do.
    """
    images = body.get("images") or []
    if not isinstance(images, list):
        raise invalid("images", "must be a list of image URLs or base64 images")
    prompt = body.get("prompt") or None
    count = len(images) + (1 if prompt else 0)
    if count == 0:
        raise invalid("images", "fuse needs at least one image in images, or a prompt")
    share = 1.0 / count
    weights = body.get("image_weights")
    if weights is None:
        weights = [share] * len(images)
    if not isinstance(weights, list) or len(weights) != len(images):
        raise invalid("image_weights", f"must be a list of {len(images)} numbers, one per image")
    settings = service.settings
    items: list[dict[str, Any]] = [
        {"image": image_bytes(_text(image, f"images.{i}"), f"images.{i}", settings), "weight": weight}
        for i, (image, weight) in enumerate(zip(images, weights, strict=True))
    ]
    if prompt:
        weight = body.get("prompt_weight")
        items.append({"prompt": prompt, "weight": share if weight is None else weight})
    return items


def _default_size(spec: Slug, fields: dict[str, Any]) -> tuple[int, int]:
    """The input image's size (scaled into the allowed range) for image-to-image slugs, so the
    result matches what was sent; the model's default size otherwise."""
    source = fields.get("image") or fields.get("hint")
    if isinstance(source, bytes):
        try:
            width, height = Image.open(io.BytesIO(source)).size
        except Exception:  # undecodable: validation reports it, naming the field
            return spec.size, spec.size
        scale = min(1.0, MAX_SIDE / max(width, height))
        return max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale))
    return spec.size, spec.size
