"""Model FLOPs per image, and model-FLOPs utilisation (MFU) against the GPU's half-precision peak.

FLOPs are counted, not estimated: torch's FlopCounterMode runs one forward of each model on the
`meta` device (shapes only: no memory, no arithmetic, about a second at full size) on modules rebuilt
from the loaded models' configs, so the count is the loaded architecture's at the size asked for.
Convolutions, matmuls and attention count 2 per multiply-add; norms and activations are not counted,
as in kandinsky-models.md §6, whose per-forward table this reproduces for random-2.2.

One image costs: decoder steps × one UNet forward and prior steps × one prior forward (each twice
with CFG), the prompt and the negative through the prior's text encoder, and one MoVQ decode. The
zero-image embedding is left out, as the engine computes it once per process. Kandinsky 2.2 only
(image-embedding conditioning), like the diffusers side of the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from kandinsky_serve.engine.images import generation_size
from kandinsky_serve.engine.sources import UNetKind

if TYPE_CHECKING:
    from kandinsky_serve.engine.engine import Engine

# Dense bf16/fp16 tensor-core peaks, TFLOP/s (vendor datasheets; the sparse figures are twice these).
# More specific names first: an H100 PCIe must not be measured against the SXM part's peak.
_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
)

_META = torch.device("meta")


def peak_flops(device_name: str) -> float | None:
    """FLOP/s of a GPU by its torch.cuda.get_device_name; None for one not in the table."""
    for name, tflops in _PEAK_TFLOPS:
        if name.lower() in device_name.lower():
            return tflops * 1e12
    return None


def utilisation(flops_per_image: int, seconds_per_image: float, peak: float | None) -> float | None:
    if peak is None or seconds_per_image <= 0:
        return None
    return round(flops_per_image / seconds_per_image / peak, 4)


def _counted(forward: Any) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        forward()
    return int(counter.get_total_flops())


def _on_meta(module: Any) -> Any:
    """An empty copy of a loaded diffusers or transformers model: same config, weights on `meta`."""
    cls = type(module)
    with _META:
        return cls.from_config(module.config) if hasattr(cls, "from_config") else cls(module.config)


@dataclass(frozen=True)
class Forwards:
    """FLOPs of one forward of each model, batch 1, at one size."""

    unet: int
    movq_decode: int
    prior: int
    text_encoder: int


class FlopCounter:
    """FLOPs per image of one engine's models; counts each model and size once."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._unet = _on_meta(engine.unet(UNetKind.TEXT2IMG))
        self._movq = _on_meta(engine.movq)
        self._embedding_dim = engine.prior.embedding_dim
        self._fixed: tuple[int, int] | None = None  # (prior, text encoder): the same at every size
        self._by_size: dict[int, Forwards] = {}

    def per_image(self, size: int, steps: int, prior_steps: int, cfg: bool = True, prior_cfg: bool = True) -> int:
        one = self.forwards(size)
        return (
            steps * one.unet * (2 if cfg else 1)
            + prior_steps * one.prior * (2 if prior_cfg else 1)
            + one.text_encoder * (2 if prior_cfg else 1)  # the prompt, and the negative with CFG
            + one.movq_decode
        )

    def forwards(self, size: int) -> Forwards:
        """At a square size, as the engine rounds it."""
        if size not in self._by_size:
            if self._fixed is None:
                self._fixed = self._count_prior_and_text()
            self._by_size[size] = Forwards(*self._count_unet_and_movq(size), *self._fixed)
        return self._by_size[size]

    def _count_prior_and_text(self) -> tuple[int, int]:
        parts = self._engine.prior.parts
        prior, text = _on_meta(parts.prior), _on_meta(parts.text_encoder)
        tokens = int(text.config.max_position_embeddings)
        with _META:
            latents = torch.zeros(1, self._embedding_dim)
            projected = torch.zeros(1, int(text.config.projection_dim))
            hidden = torch.zeros(1, tokens, int(text.config.hidden_size))
            mask = torch.ones(1, tokens, dtype=torch.bool)
            ids = torch.zeros(1, tokens, dtype=torch.long)
            timestep = torch.tensor(1)
        prior_flops = _counted(
            lambda: prior(
                latents, timestep=timestep, proj_embedding=projected, encoder_hidden_states=hidden, attention_mask=mask
            )
        )
        return prior_flops, _counted(lambda: text(ids))

    def _count_unet_and_movq(self, size: int) -> tuple[int, int]:
        width, height = generation_size(size, size, self._engine.size_multiple)
        scale = self._engine.movq_scale
        with _META:
            sample = torch.zeros(1, int(self._unet.config.in_channels), height // scale, width // scale)
            latents = torch.zeros(1, int(self._movq.config.latent_channels), height // scale, width // scale)
            embeds = torch.zeros(1, self._embedding_dim)
            timestep = torch.tensor(1)
        unet = _counted(
            lambda: self._unet(
                sample=sample,
                timestep=timestep,
                encoder_hidden_states=None,
                added_cond_kwargs={"image_embeds": embeds},
                return_dict=False,
            )
        )
        movq = _counted(lambda: self._movq.decode(latents, force_not_quantize=True))
        return unet, movq
