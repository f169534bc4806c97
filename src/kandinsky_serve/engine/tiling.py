"""MoVQ decoding in overlapping tiles, so large images decode in the memory of a small one.

diffusers' VQModel has no tiling of its own. Each tile goes through `movq.decode` with its own slice
of the latents, which is also the SpatialNorm conditioning (zq) of its decoder, so a tile sees what a
full decode sees there, less the context: GroupNorm statistics and the mid-block self-attention are
per tile. Neighbouring tiles overlap and are cross-faded linearly, so those differences do not show
as seams. All sizes here are in latent pixels; one latent pixel is 8x8 image pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class DecodeTiling:
    """When to decode in tiles (above `above` latent pixels) and how (tiles of at most `tile` a
    side, overlapping by at least `overlap`).

    The defaults keep 1024x1024 (128x128 latents, the models' native size) a single decode and split
    anything larger into tiles of at most 768x768 image pixels, which also leaves the out-of-memory
    retry of a 1024x1024 decode something smaller to fall back to. Overlaps of a quarter tile follow
    diffusers' AutoencoderKL tiling.
    """

    above: int = 128 * 128
    tile: int = 96
    overlap: int = 24

    def __post_init__(self) -> None:
        if self.tile < 1 or self.overlap < 0 or self.above < 0:
            raise ValueError(f"invalid decode tiling {self}")
        if 3 * self.overlap > self.tile:  # wider overlaps would let three tiles meet, and blend unevenly
            raise ValueError(f"decode tiling overlap {self.overlap} is more than a third of the tile {self.tile}")


DEFAULT_TILING = DecodeTiling()


def should_tile(latent_height: int, latent_width: int, tiling: DecodeTiling = DEFAULT_TILING) -> bool:
    return latent_height * latent_width > tiling.above


def spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) of the tiles along one axis: as few as cover it with `overlap`, all the same size
    and spread evenly, so no tile is a thin sliver (a sliver's GroupNorm statistics would be off)."""
    if length <= tile:
        return [(0, length)]
    count = -(-(length - overlap) // (tile - overlap))
    size = -(-(length + (count - 1) * overlap) // count)  # the smallest tile that still keeps the overlap
    starts = [round(i * (length - size) / (count - 1)) for i in range(count)]
    return [(start, start + size) for start in starts]


def decode_whole(movq: Any, latents: torch.Tensor) -> torch.Tensor:
    """The plain decode: latents the decoder made, so never quantized again."""
    decoded: torch.Tensor = movq.decode(latents, force_not_quantize=True).sample
    return decoded


def decode_tiled(movq: Any, latents: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """What decode_whole returns (same shape and dtype), decoded tile by tile with the whole batch in
    each tile; the overlaps are linear cross-fades."""
    rows = spans(latents.shape[-2], tile, overlap)
    columns = spans(latents.shape[-1], tile, overlap)
    total: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    scale, dtype = 0, latents.dtype
    for i, (top, bottom) in enumerate(rows):
        for j, (left, right) in enumerate(columns):
            part = decode_whole(movq, latents[..., top:bottom, left:right])
            if total is None:
                scale, dtype = part.shape[-1] // (right - left), part.dtype
                height, width = latents.shape[-2] * scale, latents.shape[-1] * scale
                # float32 sums: fp16 would round the cross-fades visibly
                total = torch.zeros(*part.shape[:-2], height, width, device=part.device, dtype=torch.float32)
                weights = torch.zeros(height, width, device=part.device, dtype=torch.float32)
            assert weights is not None
            ramp_y = _ramp(rows, i, scale, part.device)
            ramp_x = _ramp(columns, j, scale, part.device)
            weight = ramp_y[:, None] * ramp_x[None, :]
            y, x = slice(top * scale, bottom * scale), slice(left * scale, right * scale)
            total[..., y, x] += part.float() * weight
            weights[y, x] += weight
            del part  # before the next tile's decode, not after it
    assert total is not None and weights is not None
    return (total / weights).to(dtype)


def _ramp(tiles: list[tuple[int, int]], index: int, scale: int, device: torch.device) -> torch.Tensor:
    """One tile's blend weights along an axis: rising across the overlap with the previous tile,
    falling across the one with the next, so two tiles' weights sum to 1 wherever they meet.
    Half-pixel offsets keep every weight above 0 (the sums are divided by)."""
    start, end = tiles[index]
    weight = torch.ones((end - start) * scale, device=device)
    if index > 0:
        rise = (tiles[index - 1][1] - start) * scale
        weight[:rise] = (torch.arange(rise, device=device) + 0.5) / rise
    if index < len(tiles) - 1:
        fall = (end - tiles[index + 1][0]) * scale
        weight[weight.numel() - fall :] = (fall - 0.5 - torch.arange(fall, device=device)) / fall
    return weight


def is_out_of_memory(exc: BaseException) -> bool:
    # CUDA raises OutOfMemoryError; CPU allocators raise plain RuntimeErrors worded either way
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text.lower() or "can't allocate memory" in text)


def decode(movq: Any, latents: torch.Tensor, tiling: DecodeTiling = DEFAULT_TILING) -> torch.Tensor:
    """Latents to pixels (what movq.decode gives), in tiles when the rule says so, or when the whole
    decode runs out of memory and tiles would split it (Fooocus's fallback)."""
    height, width = latents.shape[-2:]
    if should_tile(height, width, tiling):
        return decode_tiled(movq, latents, tiling.tile, tiling.overlap)
    try:
        return decode_whole(movq, latents)
    except RuntimeError as exc:  # torch.OutOfMemoryError is one
        if not is_out_of_memory(exc) or max(height, width) <= tiling.tile:
            raise
    # retried outside the except block: the traceback's frames still hold the failed decode's tensors
    if latents.device.type == "cuda":
        torch.cuda.empty_cache()
    return decode_tiled(movq, latents, tiling.tile, tiling.overlap)
