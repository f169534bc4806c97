"""The two Kandinsky models Replicate hosts, as its model and version endpoints describe them.

Names, defaults, ranges and enums are Replicate's (reference §1.13). Inputs marked as extensions are
ours: Replicate ignores inputs a model does not declare, so sending them there is harmless.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from kandinsky_serve.api.fields import FieldMap
from kandinsky_serve.domain.catalogue import Family
from kandinsky_serve.domain.errors import ErrorCode, ServeError

_SIZES_22 = [384, 512, 576, 640, 704, 768, 960, 1024, 1152, 1280, 1536, 1792, 2048]
_EXTENSION = "kandinsky-serve extension (not in Replicate's schema): "


@dataclass(frozen=True)
class ReplicateModel:
    owner: str
    name: str
    version: str
    family: Family
    description: str
    github_url: str
    created_at: str
    # Replicate input name -> canonical GenerationRequest field (errors name `input.<name>`)
    fields: FieldMap
    # canonical defaults that differ from GenerationRequest's
    defaults: dict[str, Any]
    properties: dict[str, dict[str, Any]]
    required: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.name}"


def _int(title: str, default: int | None, minimum: int, maximum: int, order: int, desc: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "title": title, "minimum": minimum, "maximum": maximum}
    if default is not None:
        schema["default"] = default
    return {**schema, "x-order": order, "description": desc}


def _format(order: int, default: str, prefix: str = "") -> dict[str, Any]:
    return {
        "type": "string",
        "title": "Output Format",
        "enum": ["webp", "jpeg", "png"],
        "default": default,
        "x-order": order,
        "description": prefix + "Output image format",
    }


def _quality(order: int) -> dict[str, Any]:
    return _int("Output Quality", 80, 1, 100, order, _EXTENSION + "quality of jpeg and webp outputs")


def _inputs(names: dict[str, str]) -> FieldMap:
    # Replicate shows the field apart (`invalid_fields`), so a message always reads "input.<name>: ..."
    return FieldMap(names, prefix="input.", labelled=True)


_SEED = {"type": "integer", "title": "Seed", "description": "Random seed. Leave blank to randomize the seed"}

K22 = ReplicateModel(
    owner="ai-forever",
    name="kandinsky-2.2",
    version="ad9d7879fbffa2874e1d909d1d37d9bc682889cc65b31f7bb00d2362619f194a",
    family=Family.K22,
    description="multilingual text2image latent diffusion model",
    github_url="https://github.com/ai-forever/Kandinsky-2",
    created_at="2023-07-12T00:00:00.000000Z",
    fields=_inputs(
        {
            "prompt": "prompt",
            "negative_prompt": "negative_prompt",
            "width": "width",
            "height": "height",
            "num_inference_steps": "steps",
            "num_inference_steps_prior": "prior_steps",
            "num_outputs": "num_images",
            "seed": "seed",
            "output_format": "output_format",
            "output_quality": "output_quality",
        }
    ),
    defaults={
        "prompt": "A moss covered astronaut with a black background",
        "width": 512,
        "height": 512,
        "steps": 75,
        "prior_steps": 25,
        "output_format": "webp",
    },
    properties={
        "prompt": {
            "type": "string",
            "title": "Prompt",
            "default": "A moss covered astronaut with a black background",
            "x-order": 0,
            "description": "Input prompt",
        },
        "negative_prompt": {"type": "string", "title": "Negative Prompt", "x-order": 1, "description": "Avoid this"},
        "width": {
            "type": "integer",
            "title": "Width",
            "enum": _SIZES_22,
            "default": 512,
            "x-order": 2,
            "description": "Width of output image. Reduce the setting if it hits memory limits",
        },
        "height": {
            "type": "integer",
            "title": "Height",
            "enum": _SIZES_22,
            "default": 512,
            "x-order": 3,
            "description": "Height of output image. Reduce the setting if it hits memory limits",
        },
        "num_inference_steps": _int("Num Inference Steps", 75, 1, 500, 4, "Number of denoising steps"),
        "num_inference_steps_prior": _int("Num Inference Steps Prior", 25, 1, 500, 5, "Number of prior steps"),
        "num_outputs": _int("Num Outputs", 1, 1, 4, 6, "Number of images to output."),
        "seed": {**_SEED, "x-order": 7},
        "output_format": _format(8, "webp"),
        "output_quality": _quality(9),
    },
)

K21 = ReplicateModel(
    owner="ai-forever",
    name="kandinsky-2-1",
    version="a768f3c2e174c54b576cc4f222e789e161160403d0cd0ace41eeb9a0f8c8d5f8",
    family=Family.K21,
    description="text2img model trained on LAION HighRes and fine-tuned on internal datasets",
    github_url="https://github.com/ai-forever/Kandinsky-2",
    created_at="2023-04-04T00:00:00.000000Z",
    fields=_inputs(
        {
            "task": "task",
            "prompt": "prompt",
            "negative_prompt": "negative_prompt",
            "image": "image",
            "strength": "strength",
            "width": "width",
            "height": "height",
            "num_outputs": "num_images",
            "num_steps_prior": "prior_steps",
            "num_inference_steps": "steps",
            "guidance_scale": "guidance_scale",
            "seed": "seed",
            "scheduler": "scheduler",
            "output_format": "output_format",
            "output_quality": "output_quality",
        }
    ),
    defaults={
        "negative_prompt": "low quality, bad quality",
        "width": 512,
        "height": 512,
        "steps": 100,
        "prior_steps": 25,
        "guidance_scale": 4.0,
        "strength": 0.3,
        # Cog models write PNG unless told otherwise; this one has no output_format input at Replicate
        "output_format": "png",
    },
    properties={
        "task": {
            "type": "string",
            "title": "Task",
            "enum": ["text2img", "text_guided_img2img"],
            "default": "text2img",
            "x-order": 0,
            "description": "Choose a task",
        },
        "prompt": {"type": "string", "title": "Prompt", "x-order": 1, "description": "Provide input prompt"},
        "negative_prompt": {
            "type": "string",
            "title": "Negative Prompt",
            "default": "low quality, bad quality",
            "x-order": 2,
            "description": "Specify things to not see in the output",
        },
        "image": {
            "type": "string",
            "format": "uri",
            "title": "Image",
            "x-order": 3,
            "description": "Input image for text_guided_img2img task",
        },
        "strength": {
            "type": "number",
            "title": "Strength",
            "default": 0.3,
            "minimum": 0,
            "maximum": 1,
            "x-order": 4,
            "description": "indicates how much to transform the input image, valid for text_guided_img2img task.",
        },
        "width": _int("Width", 512, 128, 1024, 5, "Width of output image. Lower the setting if hits memory limits."),
        "height": _int("Height", 512, 128, 1024, 6, "Height of output image. Lower the setting if hits memory limits."),
        "num_outputs": _int("Num Outputs", 1, 1, 4, 7, "Number of images to output."),
        "num_steps_prior": _int("Num Steps Prior", 25, 1, 500, 8, "Number of denoising steps in prior"),
        "num_inference_steps": _int("Num Inference Steps", 100, 1, 500, 9, "Number of denoising steps"),
        "guidance_scale": {
            "type": "number",
            "title": "Guidance Scale",
            "default": 4,
            "minimum": 1,
            "maximum": 20,
            "x-order": 10,
            "description": "Scale for classifier-free guidance",
        },
        "seed": {**_SEED, "x-order": 11},
        "scheduler": {
            "type": "string",
            "title": "Scheduler",
            "enum": ["ddim_sampler", "p_sampler", "plms_sampler"],
            "default": "ddim_sampler",
            "x-order": 12,
            "description": _EXTENSION + "decoder sampler",
        },
        "output_format": _format(13, "png", _EXTENSION),
        "output_quality": _quality(14),
    },
    required=["prompt"],
)

MODELS: dict[str, ReplicateModel] = {m.ref: m for m in (K22, K21)}
_BY_VERSION = {m.version: m for m in MODELS.values()}

# the Replicate-side bounds that are tighter than the canonical request's; sizes are not listed:
# any size the served model makes is accepted (the enum is what Replicate's hardware offered)
LIMITS: dict[str, tuple[float, float]] = {"num_outputs": (1, 4)}
LIMITS_21: dict[str, tuple[float, float]] = {"guidance_scale": (1, 20), "strength": (0, 1)}


def _invalid_version() -> ServeError:
    return ServeError(
        ErrorCode.INVALID_INPUT,
        "The specified version does not exist (or perhaps you don't have permission to use it?)",
        field="version",
    )


def model_named(owner: str, name: str) -> ReplicateModel:
    found = MODELS.get(f"{owner}/{name}")
    if found is None:
        served = ", ".join(MODELS)
        raise ServeError(ErrorCode.NOT_FOUND, f"Model {owner}/{name} not found; this server re-serves {served}.")
    return found


def resolve_version(ref: str) -> ReplicateModel:
    """A bare version id, `owner/name:version` or `owner/name`, as POST /v1/predictions accepts."""
    if "/" not in ref:
        if ref not in _BY_VERSION:
            raise _invalid_version()
        return _BY_VERSION[ref]
    model_ref, _, version = ref.partition(":")
    owner, _, name = model_ref.partition("/")
    model = model_named(owner, name)
    if version and version != model.version:
        raise _invalid_version()
    return model


def for_family(family: Family) -> ReplicateModel:
    """The Replicate model a model of this family is re-served as (jobs of other dialects show as it)."""
    return next(m for m in MODELS.values() if m.family is family)


def check_served(model: ReplicateModel, families: Collection[Family], served_ids: str) -> None:
    """NOT_FOUND, naming what is served, unless a model of this Replicate model's family is."""
    if model.family not in families:
        others = ", ".join(m.ref for m in MODELS.values() if m.family in families)
        raise ServeError(
            ErrorCode.NOT_FOUND,
            f"{model.ref} is not served here: this server runs {others} (models {served_ids}).",
        )


def openapi_schema(model: ReplicateModel) -> dict[str, Any]:
    output = {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Output"}
    status = {"type": "string", "enum": ["starting", "processing", "succeeded", "canceled", "failed"]}
    inputs: dict[str, Any] = {"type": "object", "title": "Input", "properties": model.properties}
    if model.required:
        inputs["required"] = model.required
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {},
        "components": {"schemas": {"Input": inputs, "Output": output, "Status": status}},
    }


def version_json(model: ReplicateModel) -> dict[str, Any]:
    # cog_version >= 0.3.9 tells replicate-python a plain array output is a list, not an iterator
    return {
        "id": model.version,
        "created_at": model.created_at,
        "cog_version": "0.8.6",
        "openapi_schema": openapi_schema(model),
    }


def model_json(model: ReplicateModel, base: str) -> dict[str, Any]:
    return {
        "url": f"{base}/v1/models/{model.ref}",
        "owner": model.owner,
        "name": model.name,
        "description": model.description,
        "visibility": "public",
        "github_url": model.github_url,
        "paper_url": None,
        "license_url": "https://github.com/ai-forever/Kandinsky-2/blob/main/license",
        "run_count": 0,
        "cover_image_url": None,
        "default_example": None,
        "latest_version": version_json(model),
    }
