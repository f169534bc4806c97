"""OpenAI Images parameters to the canonical GenerationRequest, and finished jobs to ImagesResponse.

Decisions, which users can rely on:
- `model` picks one of the models served here by its id or alias (GET /v1/models lists them);
  kandinsky-2.2 and kandinsky-2.1 run on the served model of that family; any other name (dall-e-2,
  gpt-image-1...) runs on the default model: code written for OpenAI names OpenAI's models. A model of
  ours that is not served here is a 404 (model_not_found) naming those that are (router.served_model).
- `size` is any `WxH` with both sides within the server's limits (OpenAI's named sizes are just
  such strings); `auto` and no size mean 1024x1024 for generations, the input's size for edits.
- `quality` sets the decoder steps: low 25, standard/medium/auto 50, hd/high and above 100.
- GPT image models always answer in base64, so a `gpt-image*` model without `response_format`
  gets `b64_json`; otherwise the default is `url`, as for dall-e-2 and dall-e-3.
- Masks: OpenAI edits where the mask is transparent (alpha 0); ours repaints white. The mask's alpha
  is inverted into a grey mask, partial transparency giving partial repaint. An edit without a mask
  of an image that has transparent pixels inpaints those (dall-e-2's rule); of an opaque image, it
  is an img2img.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image, ImageChops

from kandinsky_serve.api.fields import FieldMap
from kandinsky_serve.domain.errors import ServeError, invalid
from kandinsky_serve.domain.request import MAX_SIDE, MIN_SIDE, GenerationRequest, Task
from kandinsky_serve.imaging import decode_image

DEFAULT_SIZE = (1024, 1024)
_SIZE = re.compile(r"^\s*(\d{1,6})\s*[xX×]\s*(\d{1,6})\s*$")
_STEPS = {"low": 25, "medium": 50, "standard": 50, "auto": 50, "high": 100, "hd": 100, "xhigh": 100, "max": 100}

ResponseFormat = Literal["url", "b64_json"]

# OpenAI parameter -> canonical field; `size` is width and height; the SDK sends an edit's file as `image[]`
FIELDS = FieldMap(
    {
        "prompt": "prompt",
        "n": "num_images",
        "quality": "steps",
        "output_format": "output_format",
        "output_compression": "output_quality",
        "seed": "seed",
        "negative_prompt": "negative_prompt",
        "strength": "strength",
        "image": "image",
        "mask": "mask",
    },
    parts={"size": ("width", "height")},
    aliases={"image[]": "image"},
    labelled=True,  # the envelope names the field apart, as `param`
)


@dataclass(frozen=True)
class Common:
    """The parameters generations and edits share, as the caller sent them."""

    prompt: str
    model: str | None = None
    n: int | None = None
    size: str | None = None
    quality: str | None = None
    response_format: ResponseFormat | None = None
    output_format: str | None = None
    output_compression: int | None = None
    stream: bool | None = None
    # extensions beyond OpenAI's schema, for callers who pass them through extra_body
    seed: int | None = None
    negative_prompt: str | None = None
    strength: float | None = None


def parse_size(size: str | None, default: tuple[int, int]) -> tuple[int, int]:
    if size is None or size.strip().lower() == "auto":
        return default
    match = _SIZE.match(size)
    if match is None:
        raise invalid("size", f"must be WIDTHxHEIGHT such as 1024x1024, or auto (got {size[:40]!r})")
    width, height = int(match[1]), int(match[2])
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise invalid("size", f"{width}x{height} is not available: each side must be {MIN_SIDE} to {MAX_SIDE}")
    return width, height


def response_format(params: Common) -> ResponseFormat:
    if params.response_format is not None:
        return params.response_format
    return "b64_json" if (params.model or "").lower().startswith(("gpt-image", "chatgpt-image")) else "url"


def _steps(quality: str) -> int:
    if quality not in _STEPS:
        raise invalid("quality", f"must be one of {', '.join(_STEPS)} (got {quality[:40]!r})")
    return _STEPS[quality]


def _compression(compression: int) -> int:
    return max(compression, 1)  # OpenAI's 0 is the smallest file; the encoders' lowest quality is 1


# how a parameter's value becomes its canonical field's, where it is not the same value
_VALUES: dict[str, Callable[[Any], Any]] = {
    "quality": _steps,
    "output_compression": _compression,
    "output_format": str.lower,
}


def _fields(params: Common, size: tuple[int, int]) -> dict[str, Any]:
    if params.stream:
        raise invalid("stream", "streaming partial images is not supported here; leave stream unset")
    fields: dict[str, Any] = {"width": size[0], "height": size[1], "num_images": 1, "output_format": "png"}
    for name, canonical in FIELDS.names.items():
        value = getattr(params, name, None)  # image and mask are files, read apart (edit)
        if value is not None:
            fields[canonical] = _VALUES.get(name, _same)(value)
    return fields


def _same(value: Any) -> Any:
    return value


def generation(params: Common) -> GenerationRequest:
    return GenerationRequest.parse({"task": Task.TEXT2IMG, **_fields(params, parse_size(params.size, DEFAULT_SIZE))})


def edit(params: Common, image: bytes, mask: bytes | None) -> GenerationRequest:
    picture = _decode(image, "image", "RGBA")
    size = parse_size(params.size, _fit(picture.size))
    fields = _fields(params, size)
    if mask is not None:
        matte = _decode(mask, "mask", "RGBA")
        if matte.size != picture.size:
            w, h = picture.size
            raise invalid("mask", f"is {matte.width}x{matte.height} but image is {w}x{h}; they must match")
        if "A" not in _decode(mask, "mask", None).getbands():
            raise invalid("mask", "needs an alpha channel: its fully transparent pixels mark the area to edit")
        repaint: Image.Image | None = _repaint_from_alpha(matte)
    else:
        repaint = _repaint_from_alpha(picture) if _has_transparency(picture) else None
    fields["image"] = _png(picture.convert("RGB"))
    if repaint is None:
        return GenerationRequest.parse({"task": Task.IMG2IMG, **fields})
    return GenerationRequest.parse({"task": Task.INPAINT, **fields, "mask": _png(repaint)})


def _decode(data: bytes, field: str, mode: str | None) -> Image.Image:
    try:
        if mode is None:
            return Image.open(io.BytesIO(data))  # only the header, to see the bands; decode_image checked it
        return decode_image(data, mode)
    except ServeError as exc:
        raise invalid(field, exc.message.removeprefix("image ")) from None


def _fit(size: tuple[int, int]) -> tuple[int, int]:
    """The input's size, scaled into the server's limits (an edit keeps its picture's shape)."""
    width, height = size
    scale = min(1.0, MAX_SIDE / max(width, height))
    scale = max(scale, MIN_SIDE / min(width, height))
    return round(width * scale), round(height * scale)


def _has_transparency(image: Image.Image) -> bool:
    low, _ = image.getchannel("A").getextrema()
    return bool(low == 0)


def _repaint_from_alpha(image: Image.Image) -> Image.Image:
    return ImageChops.invert(image.getchannel("A"))


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def images_response(
    data: list[dict[str, Any]], request: GenerationRequest, quality: str | None, created: float | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "created": int(created if created is not None else time.time()),
        "data": data,
        "background": "opaque",
        "output_format": request.output_format.value,
        "size": f"{request.width}x{request.height}",
    }
    if quality is not None:
        body["quality"] = quality
    return body
