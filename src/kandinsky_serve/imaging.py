"""Image bytes in and out: safe decoding with pixel limits, and encoding to the output formats."""

from __future__ import annotations

import io
import warnings

from PIL import Image

from kandinsky_serve.domain.errors import ErrorCode, ServeError

# An input larger than this is refused before it is decoded (a decompression bomb costs nothing then).
MAX_INPUT_PIXELS = 4096 * 4096


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ServeError(ErrorCode.INVALID_INPUT, f"image is too large to decode: {exc}") from None
    except Exception:
        raise ServeError(ErrorCode.INVALID_INPUT, "image could not be decoded (send PNG, JPEG or WebP)") from None
    width, height = image.size
    if width * height > MAX_INPUT_PIXELS:
        raise ServeError(
            ErrorCode.INVALID_INPUT,
            f"image is {width}x{height}, more than the {MAX_INPUT_PIXELS} pixels allowed",
        )
    return image


def check_image_bytes(data: bytes) -> None:
    """Raises ValueError (for pydantic) unless data is a whole, decodable image within the pixel limit.
    Decoding it all is what finds a truncated file here, at submit, rather than in the worker later."""
    try:
        _load(_open(data))
    except ServeError as exc:
        raise ValueError(exc.message.removeprefix("image ")) from None


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height from the image's header, without decoding its pixels."""
    width, height = _open(data).size
    return int(width), int(height)


def _load(image: Image.Image) -> Image.Image:
    try:
        image.load()
    except Exception:
        raise ServeError(ErrorCode.INVALID_INPUT, "image is truncated or corrupt") from None
    return image


def decode_image(data: bytes, mode: str = "RGB") -> Image.Image:
    image = _load(_open(data))
    if mode == "L" and image.mode in ("RGBA", "LA"):
        # a mask drawn on a transparent layer: what was painted (opaque) is what to repaint
        image = image.getchannel("A")
    return image.convert(mode)


def encode_image(image: Image.Image, fmt: str, quality: int = 80) -> bytes:
    """Encodes to 'png', 'jpeg' or 'webp'; quality is ignored by PNG, which is lossless."""
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG", compress_level=4)
    elif fmt == "jpeg":
        image.convert("RGB").save(buf, format="JPEG", quality=quality)
    elif fmt == "webp":
        # method 2 rather than libwebp's default 4: 40% less time for files 1.5% larger (768²: 89 against
        # 149 ms on a workplace CPU core), and the encoding is on every job's path to its result
        image.save(buf, format="WEBP", quality=quality, method=2)
    else:
        raise ValueError(f"unknown output format {fmt!r}")
    return buf.getvalue()
