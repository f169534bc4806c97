"""Full-size Kandinsky architectures with random weights, built from the checkpoints' own configs.

For speed and memory benchmarks without a download: the FLOPs and memory are the real model's,
the pictures are noise. The configs in configs/*.json are the hub's (parameter counts checked
against the published checkpoints in tests). Modules are allocated directly on the target device,
so a GPU box never materializes the 1.8 B-parameter image encoder in host memory, and `meta` builds
cost nothing.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import torch

from kandinsky_serve.engine.handover import hand_over, no_decoder_text, no_unet
from kandinsky_serve.engine.sources import DecoderTextParts, Family, PriorParts, UNetKind
from kandinsky_serve.engine.tokenizers import tiny_prior_tokenizer, tiny_xlmr_tokenizer

_UNET_CONFIGS = {
    (Family.K22, UNetKind.TEXT2IMG): "k22_unet",
    (Family.K22, UNetKind.INPAINT): "k22_inpaint_unet",
    (Family.K22, UNetKind.CONTROLNET): "k22_controlnet_unet",
    (Family.K21, UNetKind.TEXT2IMG): "k21_unet",
    (Family.K21, UNetKind.INPAINT): "k21_inpaint_unet",
}


def load_config(name: str) -> dict[str, Any]:
    """A config shipped in engine/configs/, by file stem (e.g. "k22_unet"); a fresh dict each call."""
    text = resources.files("kandinsky_serve.engine").joinpath(f"configs/{name}.json").read_text("utf-8")
    config: dict[str, Any] = json.loads(text)
    return config


def _prefix(family: Family) -> str:
    return "k22" if family is Family.K22 else "k21"


def image_processor() -> Any:
    # The PIL backend explicitly: the default CLIPImageProcessor needs torchvision in transformers 5 and
    # falls back to this one with a warning; naming it keeps preprocessing identical on every machine.
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(**load_config("image_processor"))


def build_prior(family: Family, device: torch.device | str, dtype: torch.dtype) -> Any:
    from diffusers import PriorTransformer

    with torch.device(device):
        prior = PriorTransformer.from_config(load_config(f"{_prefix(family)}_prior"))
        # clip_std starts at 0, which would turn every generated embedding into 0.
        with torch.no_grad():
            prior.clip_std.fill_(1.0)
    return hand_over(prior, device, dtype)


def build_text_encoder(family: Family, device: torch.device | str, dtype: torch.dtype) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(**load_config(f"{_prefix(family)}_text_encoder"))
    with torch.device(device):
        return hand_over(CLIPTextModelWithProjection(config), device, dtype)


def build_image_encoder(family: Family, device: torch.device | str, dtype: torch.dtype) -> Any:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(**load_config(f"{_prefix(family)}_image_encoder"))
    with torch.device(device):
        return hand_over(CLIPVisionModelWithProjection(config), device, dtype)


def build_unet(family: Family, kind: UNetKind, device: torch.device | str, dtype: torch.dtype) -> Any:
    from diffusers import UNet2DConditionModel

    name = _UNET_CONFIGS.get((family, kind))
    if name is None:
        raise no_unet(family, kind)
    with torch.device(device):
        return hand_over(UNet2DConditionModel.from_config(load_config(name)), device, dtype)


def build_movq(device: torch.device | str, dtype: torch.dtype) -> Any:
    from diffusers import VQModel

    with torch.device(device):
        return hand_over(VQModel.from_config(load_config("movq")), device, dtype)


def build_mclip(device: torch.device | str, dtype: torch.dtype) -> Any:
    from diffusers.pipelines.kandinsky.text_encoder import MCLIPConfig, MultilingualCLIP

    config = MCLIPConfig(**load_config("k21_mclip_text_encoder"))
    with torch.device(device):
        return hand_over(MultilingualCLIP(config), device, dtype)


class RandomSource:
    """Full-size architectures, random weights. The tokenizers are the tiny offline ones: their ids are
    valid for the real 49408 / 250002-token embeddings, and a prompt still pads to 77 tokens, which is
    all that matters for the cost."""

    def __init__(self, family: Family = Family.K22) -> None:
        self.family = family

    def load_prior(self, device: torch.device, dtype: torch.dtype) -> PriorParts:
        return PriorParts(
            prior=build_prior(self.family, device, dtype),
            text_encoder=build_text_encoder(self.family, device, dtype),
            tokenizer=tiny_prior_tokenizer(self.family),
            image_encoder=build_image_encoder(self.family, device, dtype),
            image_processor=image_processor(),
            scheduler_config=load_config("prior_scheduler"),
        )

    def load_movq(self, device: torch.device, dtype: torch.dtype) -> Any:
        return build_movq(device, dtype)

    def load_unet(self, kind: UNetKind, device: torch.device, dtype: torch.dtype) -> Any:
        return build_unet(self.family, kind, device, dtype)

    def load_decoder_text(self, device: torch.device, dtype: torch.dtype) -> DecoderTextParts:
        if self.family is not Family.K21:
            raise no_decoder_text(self.family)
        return DecoderTextParts(text_encoder=build_mclip(device, dtype), tokenizer=tiny_xlmr_tokenizer())

    def decoder_scheduler_config(self) -> dict[str, Any]:
        return load_config(f"{_prefix(self.family)}_decoder_scheduler")
