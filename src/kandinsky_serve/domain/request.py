"""GenerationRequest: the one canonical request. Every dialect and the CLI translate into it.

Parameters are validated once, here; what depends on the model family (its schedulers and tasks)
is checked by the model's spec in `kandinsky_serve.engine.registry`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kandinsky_serve.domain.errors import ServeError, invalid
from kandinsky_serve.imaging import check_image_bytes, image_size

MIN_SIDE = 64
MAX_SIDE = 2048
MAX_IMAGES = 8
MAX_STEPS = 500
MAX_PROMPT_CHARS = 2000
MAX_FUSE_ITEMS = 8
MAX_SEED = 2**53 - 1  # the largest integer a JavaScript client can hold exactly


class Task(StrEnum):
    TEXT2IMG = "text2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"
    FUSE = "fuse"
    CONTROLNET = "controlnet"
    PRIOR = "prior"


class OutputFormat(StrEnum):
    WEBP = "webp"
    JPEG = "jpeg"
    PNG = "png"

    @property
    def mime_type(self) -> str:
        return f"image/{self.value}"

    @classmethod
    def from_name(cls, name: str) -> OutputFormat:
        """Accepts the usual spellings: 'jpg', 'JPEG', '.png'."""
        key = name.lower().lstrip(".")
        return cls.JPEG if key == "jpg" else cls(key)


_MODEL_CONFIG = ConfigDict(
    frozen=True,
    extra="forbid",
    # bytes travel as base64 in JSON (the job store, the native API) and as raw bytes in Python
    ser_json_bytes="base64",
    val_json_bytes="base64",
)

Prompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]


class FuseItem(BaseModel):
    """One ingredient of an image fuse: a prompt or an image, with its weight in the mix."""

    model_config = _MODEL_CONFIG

    prompt: Prompt | None = None
    image: bytes | None = None
    weight: float = Field(default=1.0, ge=-10.0, le=10.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_ingredient(self) -> Self:
        if (self.prompt is None) == (self.image is None):
            raise ValueError("each fuse item needs exactly one of prompt or image")
        if self.image is not None:
            check_image_bytes(self.image)
        return self


class GenerationRequest(BaseModel):
    """Everything one generation needs. Image i of the request uses seed + i."""

    model_config = _MODEL_CONFIG

    task: Task = Task.TEXT2IMG
    model: str | None = Field(default=None, description="model id; the server's default when omitted")
    prompt: Prompt = ""
    negative_prompt: Prompt | None = None
    width: int = Field(default=512, ge=MIN_SIDE, le=MAX_SIDE)
    height: int = Field(default=512, ge=MIN_SIDE, le=MAX_SIDE)
    num_images: int = Field(default=1, ge=1, le=MAX_IMAGES)
    steps: int = Field(default=50, ge=1, le=MAX_STEPS, description="decoder denoising steps")
    prior_steps: int = Field(default=25, ge=1, le=MAX_STEPS)
    guidance_scale: float = Field(default=4.0, ge=0.0, le=50.0, allow_inf_nan=False)
    prior_guidance_scale: float = Field(default=4.0, ge=0.0, le=50.0, allow_inf_nan=False)
    scheduler: str | None = Field(default=None, description="the model family's default when omitted")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    strength: float = Field(default=0.3, gt=0.0, le=1.0, allow_inf_nan=False)
    image: bytes | None = Field(default=None, description="init image (img2img, inpaint)")
    mask: bytes | None = Field(default=None, description="inpaint mask: white = repaint, black = keep")
    hint: bytes | None = Field(default=None, description="ControlNet depth hint")
    fuse: tuple[FuseItem, ...] = Field(default=(), max_length=MAX_FUSE_ITEMS)
    output_format: OutputFormat = OutputFormat.WEBP
    output_quality: int = Field(default=80, ge=1, le=100)

    @field_validator(
        "width", "height", "num_images", "steps", "prior_steps", "seed", "output_quality",
        "guidance_scale", "prior_guidance_scale", "strength",
        mode="before",
    )  # fmt: skip
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        # pydantic reads true as 1: a caller's mistake (a shifted field, a checkbox), not a number
        if isinstance(value, bool):
            raise ValueError("must be a number, not true or false")
        return value

    @field_validator("image", "mask", "hint")
    @classmethod
    def _decodable(cls, value: bytes | None) -> bytes | None:
        if value is not None:
            check_image_bytes(value)
        return value

    @model_validator(mode="after")
    def _inputs_fit_task(self) -> Self:
        needs: dict[Task, tuple[str, ...]] = {
            Task.IMG2IMG: ("image",),
            Task.INPAINT: ("image", "mask"),
            Task.CONTROLNET: ("hint",),
        }
        for name in needs.get(self.task, ()):
            if getattr(self, name) is None:
                raise ValueError(f"{name} is required for task {self.task.value}")
        if self.task is Task.INPAINT and self.image is not None and self.mask is not None:
            (w, h), (mw, mh) = image_size(self.image), image_size(self.mask)
            if (mw, mh) != (w, h):
                # a mask of another size would be stretched over the picture: not the area the caller drew
                raise ValueError(f"mask is {mw}x{mh} but image is {w}x{h}; they must be the same size")
        if self.task is Task.FUSE and not self.fuse:
            raise ValueError("fuse needs at least one prompt or image to mix")
        if self.task is Task.IMG2IMG and int(self.steps * self.strength) < 1:
            raise ValueError(
                f"strength {self.strength} with {self.steps} steps runs no denoising step; raise strength or steps"
            )
        if self.task is not Task.FUSE and self.fuse:
            raise ValueError(f"fuse items are only used by task fuse, not {self.task.value}")
        return self

    @classmethod
    def parse(cls, data: dict[str, Any]) -> GenerationRequest:
        """Validates, turning the first problem into a ServeError that names its field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise as_serve_error(exc) from None

    def seeds(self) -> list[int]:
        if self.seed is None:
            raise ValueError("seeds() needs a resolved seed")
        return [self.seed + i for i in range(self.num_images)]

    @property
    def batch_key(self) -> str:
        """Requests with equal keys can share one batch: one prior run, one decoder loop."""
        strength = self.strength if self.task is Task.IMG2IMG else None
        shared = (self.model, self.task.value, self.width, self.height, self.steps, self.prior_steps, self.scheduler)
        return "|".join(str(p) for p in (*shared, self.guidance_scale, self.prior_guidance_scale, strength))

    @property
    def pixels(self) -> int:
        return self.width * self.height * self.num_images


def as_serve_error(exc: ValidationError) -> ServeError:
    """The first validation problem as one sentence that starts with the field's name."""
    return first_problem(exc.errors(include_url=False))


def first_problem(errors: Sequence[Any]) -> ServeError:
    """The first of pydantic's error dicts (also FastAPI's, with the location's "body" prefix
    dropped) as one sentence that starts with the field's name."""
    err = errors[0]
    if err.get("type") == "json_invalid":
        # FastAPI locates a JSON syntax error by character offset (("body", 26)): no field to name
        position = next((part for part in err.get("loc", ()) if isinstance(part, int)), None)
        where = f" (at character {position})" if position is not None else ""
        return invalid("body", f"is not valid JSON{where}: {err.get('ctx', {}).get('error', err['msg'])}")
    err = {**err, "loc": tuple(p for p in err.get("loc", ()) if p not in ("body", "query", "path", "header"))}
    loc = ".".join(str(part) for part in err["loc"]) or "request"
    message = str(err["msg"]).removeprefix("Value error, ")
    got = err.get("input")
    if err["type"] not in ("missing", "value_error", "extra_forbidden") and _printable(got):
        message = f"{message} (got {got!r})"
    if err["type"] == "extra_forbidden":
        message = "is not a known parameter"
    if err["type"] == "value_error" and not err["loc"]:
        # model-level checks phrase the field themselves ("image is required for ...")
        field = message.split(" ", 1)[0]
        return ServeError(invalid(field, message).code, message, field=field)
    return invalid(loc, message)


def _printable(value: Any) -> bool:
    if isinstance(value, bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= 40
