"""Cheap previews of a generation in progress: the latents through a linear map to RGB.

A MoVQ decode per preview would cost as much as several denoising steps, so, like ComfyUI's
Latent2RGB, previews project each 4-channel latent pixel to a colour. The map is not hard-coded
for one checkpoint: it is fitted once per model by encoding flat colours and gradients with the
model's own MoVQ encoder and regressing colour on latent (least squares).
"""

from __future__ import annotations

import io

import torch
import torch.nn.functional as F
from PIL import Image

_FIT_SIZE = 64
_PREVIEW_SIDE = 256  # the longest side of a preview


def _fitting_images() -> torch.Tensor:
    """Flat colours and gradients in [-1, 1], (n, 3, 64, 64): enough spread to fit an affine map."""
    colours = torch.tensor(
        [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1], [0, 0, 0], [0.5, 0.5, 0.5]],
        dtype=torch.float32,
    )
    flats = colours[:, :, None, None].expand(-1, -1, _FIT_SIZE, _FIT_SIZE)
    ramp = torch.linspace(0, 1, _FIT_SIZE)
    across, down = ramp[None, :].expand(_FIT_SIZE, -1), ramp[:, None].expand(-1, _FIT_SIZE)
    gradients = torch.stack([torch.stack([across, down, 1 - across]), torch.stack([1 - down, across, down])])
    return torch.cat([flats, gradients]) * 2 - 1


class Previewer:
    def __init__(self, movq: torch.nn.Module, scale: int) -> None:
        self.movq = movq
        self.scale = scale  # pixels per latent pixel
        self._map: torch.Tensor | None = None  # (5, 3): 4 latent channels and a bias -> RGB in [-1, 1]

    def _fit(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        images = _fitting_images()
        latents = self.movq.encode(images.to(device, dtype)).latents.float().cpu()
        colours = F.avg_pool2d(images, self.scale)  # one colour per latent pixel
        x = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        y = colours.permute(0, 2, 3, 1).reshape(-1, 3)
        x = torch.cat([x, torch.ones(len(x), 1)], dim=1)
        return torch.linalg.lstsq(x, y).solution

    def render(self, latents: torch.Tensor) -> list[bytes]:
        """One JPEG per row of (n, 4, h, w) latents."""
        if self._map is None:
            self._map = self._fit(latents.device, latents.dtype)
        x = latents.float().cpu().permute(0, 2, 3, 1)
        x = torch.cat([x, torch.ones(*x.shape[:3], 1)], dim=-1)
        rgb = ((x @ self._map).clamp(-1, 1) + 1) * 127.5
        previews = []
        for image in rgb.to(torch.uint8).numpy():
            picture = Image.fromarray(image)
            factor = _PREVIEW_SIDE / max(picture.size)
            if factor > 1:
                picture = picture.resize(
                    (round(picture.width * factor), round(picture.height * factor)), Image.Resampling.BILINEAR
                )
            buffer = io.BytesIO()
            picture.save(buffer, format="JPEG", quality=70)
            previews.append(buffer.getvalue())
        return previews
