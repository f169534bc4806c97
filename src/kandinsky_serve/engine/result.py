"""What a generation returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from kandinsky_serve.domain.request import GenerationRequest
from kandinsky_serve.engine.images import to_pil


@dataclass
class GenerationResult:
    request: GenerationRequest  # with the seed that was used
    seeds: list[int]
    # (n, height, width, 3) float32 in [0, 1], exactly the requested size; empty for task prior
    pixels: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 3), np.float32))
    # task prior: one row per image, the embedding and the negative embedding a decoder takes
    image_embeds: np.ndarray | None = None
    negative_image_embeds: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def images(self) -> list[Image.Image]:
        return [to_pil(p) for p in self.pixels]
