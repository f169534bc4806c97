"""Pixels to tensors and back: input preprocessing, the inpaint mask, exact output sizes."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# The one-latent-pixel growth of the repaint region that diffusers' `prepare_mask` does with a
# Python double loop (reference §7.3), as one convolution; bit-identical to it.
_GROW = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]).reshape(1, 1, 3, 3)


def generation_size(width: int, height: int, multiple: int) -> tuple[int, int]:
    """The size the model works at: each side rounded up to the model's multiple."""
    return -(-width // multiple) * multiple, -(-height // multiple) * multiple


def image_to_tensor(image: Image.Image, width: int, height: int) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1], resized to the generation size as the diffusers pipelines do."""
    resized = image.convert("RGB").resize((width, height), resample=Image.Resampling.BICUBIC, reducing_gap=1)
    array = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1)
    return torch.from_numpy(array / 127.5 - 1.0).unsqueeze(0)


def hint_to_tensor(hint: Image.Image, width: int, height: int) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1]: a depth map (grey, white = near) replicated to 3 channels."""
    resized = hint.convert("L").resize((width, height), resample=Image.Resampling.BICUBIC)
    grey = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0)
    return grey.expand(3, -1, -1).unsqueeze(0).contiguous()


def mask_to_keep(mask: Image.Image, width: int, height: int, latent_hw: tuple[int, int]) -> torch.Tensor:
    """(1, 1, h, w) latent mask, 1 = keep, 0 = repaint, from a mask where white means repaint."""
    resized = mask.convert("L").resize((width, height), resample=Image.Resampling.LANCZOS)
    repaint = torch.from_numpy((np.asarray(resized, dtype=np.float32) / 255.0 >= 0.5).astype(np.float32))
    keep = (1.0 - repaint).reshape(1, 1, height, width)
    keep = F.interpolate(keep, latent_hw, mode="nearest")
    return grow_repaint(keep)


def grow_repaint(keep: torch.Tensor) -> torch.Tensor:
    """Grows the repaint (0) region of a (B, 1, h, w) keep-mask by one latent pixel."""
    touched = F.conv2d(1.0 - keep, _GROW.to(keep.device, keep.dtype), padding=1)
    return 1.0 - (touched > 0).to(keep.dtype)


def to_requested_size(pixels: torch.Tensor, width: int, height: int, *, resize: bool) -> torch.Tensor:
    """(n, 3, H, W) pixels in [0, 1] back to exactly the requested size from the rounded-up one.

    With an input image (img2img, inpaint, ControlNet) the whole frame was stretched to the
    generation size, so it is resized back to keep the input's framing; otherwise the centre
    is cropped, which keeps pixels sharp.
    """
    gen_height, gen_width = pixels.shape[-2:]
    if (gen_width, gen_height) == (width, height):
        return pixels
    if resize:
        resized = F.interpolate(pixels, (height, width), mode="bicubic", antialias=True, align_corners=False)
        return resized.clamp(0.0, 1.0)
    top, left = (gen_height - height) // 2, (gen_width - width) // 2
    return pixels[..., top : top + height, left : left + width]


def to_pil(pixels: np.ndarray) -> Image.Image:
    """An (H, W, 3) float array in [0, 1] as an 8-bit RGB image."""
    return Image.fromarray(np.round(pixels * 255).astype(np.uint8))
