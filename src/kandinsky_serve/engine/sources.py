"""Where model components come from: the hub, a local folder, or built in (tiny, full-size random).

A WeightsSource hands out components built on the requested device and dtype; the engine keeps
what it was given resident and asks again only for what it has not loaded yet (the inpaint and
ControlNet UNets are loaded on first use).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import torch

from kandinsky_serve.domain.catalogue import Family

__all__ = ["DecoderTextParts", "Family", "PriorParts", "UNetKind", "WeightsSource"]


class UNetKind(StrEnum):
    TEXT2IMG = "text2img"  # also serves img2img and fuse
    INPAINT = "inpaint"
    CONTROLNET = "controlnet"  # 2.2 only: the depth ControlNet checkpoint


@dataclass
class PriorParts:
    """The diffusion prior: prompt (or image) in, CLIP image embedding out."""

    prior: Any  # diffusers PriorTransformer
    text_encoder: Any  # transformers CLIPTextModelWithProjection
    tokenizer: Any  # transformers CLIPTokenizer
    image_encoder: Any  # transformers CLIPVisionModelWithProjection
    image_processor: Any  # transformers CLIPImageProcessor
    scheduler_config: dict[str, Any]  # UnCLIPScheduler

    def diffusers_pipeline(self, family: Family) -> Any:
        """These parts as diffusers' own prior pipeline (to save a model folder, or to compare with)."""
        from diffusers import KandinskyPriorPipeline, KandinskyV22PriorPipeline, UnCLIPScheduler

        pipeline = KandinskyV22PriorPipeline if family is Family.K22 else KandinskyPriorPipeline
        return pipeline(
            prior=self.prior,
            image_encoder=self.image_encoder,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            scheduler=UnCLIPScheduler.from_config(self.scheduler_config),
            image_processor=self.image_processor,
        )


@dataclass
class DecoderTextParts:
    """Kandinsky 2.1 only: its decoder is also conditioned on the prompt through M-CLIP (XLM-R)."""

    text_encoder: Any  # diffusers MultilingualCLIP
    tokenizer: Any  # transformers XLMRobertaTokenizer


class WeightsSource(Protocol):
    family: Family

    def load_prior(self, device: torch.device, dtype: torch.dtype) -> PriorParts: ...

    def load_movq(self, device: torch.device, dtype: torch.dtype) -> Any: ...

    def load_unet(self, kind: UNetKind, device: torch.device, dtype: torch.dtype) -> Any: ...

    def load_decoder_text(self, device: torch.device, dtype: torch.dtype) -> DecoderTextParts:
        """2.1 only; a 2.2 source raises ServeError(MODEL_UNAVAILABLE)."""
        ...

    def decoder_scheduler_config(self) -> dict[str, Any]:
        """The checkpoint's decoder scheduler config (its noise schedule: linear 0.00085-0.012 for
        every official Kandinsky 2.x decoder). The engine derives each scheduler it offers from it."""
        ...
