"""Tiny random Kandinsky models: the real architectures shrunk until full-size requests are cheap on a CPU.

Every API test runs on these, at real request sizes, so they are tuned for speed rather than copied
from diffusers' test dummies: a 1024x1024, 75-step Kandinsky 2.2 request (CFG batch 2) takes about
5 s on a 2-core CPU. What is kept real, because the engine depends on it:
- the MoVQ downscales x8 (4 levels), as the ControlNet hint block and the size rounding expect;
- the UNet has 4 levels, so sizes round to multiples of 64 exactly as with the real UNet;
- attention only at the lowest UNet level; none at all in the MoVQ (at 1024 px its lowest level
  is 128x128 = 16k tokens, which would dominate everything);
- the checkpoints' own scheduler configs, learned-variance UNet output, and the conditioning types.
Weights come from a fixed seed, so two builds are identical.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from kandinsky_serve.engine.handover import hand_over, no_decoder_text, no_unet
from kandinsky_serve.engine.hub import REPOS, repo_folder
from kandinsky_serve.engine.random_weights import image_processor, load_config
from kandinsky_serve.engine.sources import DecoderTextParts, Family, PriorParts, UNetKind
from kandinsky_serve.engine.tokenizers import (
    TINY_CLIP_VOCAB_SIZE,
    TINY_XLMR_VOCAB_SIZE,
    tiny_prior_tokenizer,
    tiny_xlmr_tokenizer,
)

EMBED_DIM = 32  # CLIP image embedding (prior output), M-CLIP width and UNet cross-attention width
TINY_UNET_CHANNELS = (8, 16, 32, 32)
TINY_MOVQ_CHANNELS = (32, 32, 32, 32)  # MoVQ's SpatialNorm hard-codes 32 groups: 32 is the minimum
_SEED = 0


@contextlib.contextmanager
def _seeded() -> Iterator[None]:
    # Seed without disturbing the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        yield


def build_prior() -> Any:
    from diffusers import PriorTransformer

    with _seeded():
        prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=EMBED_DIM, num_layers=1)
    # A fresh PriorTransformer has clip_std = 0, which un-normalizes every embedding to 0.
    with torch.no_grad():
        prior.clip_std.fill_(1.0)
    return prior


def build_text_encoder(family: Family) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    tokenizer = tiny_prior_tokenizer(family)
    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=EMBED_DIM,
        projection_dim=EMBED_DIM,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        max_position_embeddings=77,
        vocab_size=TINY_CLIP_VOCAB_SIZE,
    )
    with _seeded():
        return CLIPTextModelWithProjection(config)


def build_image_encoder() -> Any:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=EMBED_DIM,
        image_size=224,
        projection_dim=EMBED_DIM,
        intermediate_size=37,
        num_attention_heads=4,
        num_channels=3,
        num_hidden_layers=5,
        patch_size=14,
    )
    with _seeded():
        return CLIPVisionModelWithProjection(config)


def build_unet(family: Family, kind: UNetKind) -> Any:
    from diffusers import UNet2DConditionModel

    if family is Family.K21 and kind is UNetKind.CONTROLNET:
        raise no_unet(family, kind)
    in_channels = {UNetKind.TEXT2IMG: 4, UNetKind.INPAINT: 9, UNetKind.CONTROLNET: 8}[kind]
    if family is Family.K22:
        conditioning = {
            "addition_embed_type": "image_hint" if kind is UNetKind.CONTROLNET else "image",
            "encoder_hid_dim_type": "image_proj",
        }
    else:
        conditioning = {"addition_embed_type": "text_image", "encoder_hid_dim_type": "text_image_proj"}
    levels = len(TINY_UNET_CHANNELS)
    with _seeded():
        return UNet2DConditionModel(
            in_channels=in_channels,
            out_channels=8,  # epsilon + learned variance, like the real decoders
            down_block_types=("ResnetDownsampleBlock2D",) * (levels - 1) + ("SimpleCrossAttnDownBlock2D",),
            up_block_types=("SimpleCrossAttnUpBlock2D",) + ("ResnetUpsampleBlock2D",) * (levels - 1),
            mid_block_type="UNetMidBlock2DSimpleCrossAttn",
            block_out_channels=TINY_UNET_CHANNELS,
            layers_per_block=1,
            norm_num_groups=8,
            attention_head_dim=8,
            cross_attention_dim=EMBED_DIM,
            encoder_hid_dim=EMBED_DIM,
            resnet_time_scale_shift="scale_shift",
            class_embed_type=None,
            **conditioning,
        )


def build_movq() -> Any:
    from diffusers import VQModel

    levels = len(TINY_MOVQ_CHANNELS)
    with _seeded():
        return VQModel(
            block_out_channels=TINY_MOVQ_CHANNELS,
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            # 0 leaves one resnet per decoder level (decoders use layers_per_block + 1) and only the
            # strided convs in the encoder: the full-resolution convs are what a 1024 px decode pays for.
            layers_per_block=0,
            mid_block_add_attention=False,
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            vq_embed_dim=4,
            num_vq_embeddings=12,
            norm_num_groups=8,
            norm_type="spatial",
        )


def build_mclip() -> Any:
    from diffusers.pipelines.kandinsky.text_encoder import MCLIPConfig, MultilingualCLIP

    config = MCLIPConfig(
        numDims=EMBED_DIM,
        transformerDimensions=EMBED_DIM,
        hidden_size=EMBED_DIM,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=TINY_XLMR_VOCAB_SIZE,
    )
    with _seeded():
        return MultilingualCLIP(config)


class TinySource:
    """Tiny random components for tests and demos; nothing is downloaded."""

    def __init__(self, family: Family = Family.K22) -> None:
        self.family = family

    def load_prior(self, device: torch.device, dtype: torch.dtype) -> PriorParts:
        return PriorParts(
            prior=hand_over(build_prior(), device, dtype),
            text_encoder=hand_over(build_text_encoder(self.family), device, dtype),
            tokenizer=tiny_prior_tokenizer(self.family),
            image_encoder=hand_over(build_image_encoder(), device, dtype),
            image_processor=image_processor(),
            scheduler_config=load_config("prior_scheduler"),
        )

    def load_movq(self, device: torch.device, dtype: torch.dtype) -> Any:
        return hand_over(build_movq(), device, dtype)

    def load_unet(self, kind: UNetKind, device: torch.device, dtype: torch.dtype) -> Any:
        return hand_over(build_unet(self.family, kind), device, dtype)

    def load_decoder_text(self, device: torch.device, dtype: torch.dtype) -> DecoderTextParts:
        if self.family is not Family.K21:
            raise no_decoder_text(self.family)
        return DecoderTextParts(text_encoder=hand_over(build_mclip(), device, dtype), tokenizer=tiny_xlmr_tokenizer())

    def decoder_scheduler_config(self) -> dict[str, Any]:
        return load_config("k22_decoder_scheduler" if self.family is Family.K22 else "k21_decoder_scheduler")


def save_tiny_folder(family: Family, root: Path) -> Path:
    """Write the tiny model into `root` in the local-folder layout HubSource.from_folder reads: one
    diffusers pipeline folder per hub repo, named like the repo. Returns `root`."""
    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        KandinskyInpaintPipeline,
        KandinskyPipeline,
        KandinskyV22ControlnetPipeline,
        KandinskyV22InpaintPipeline,
        KandinskyV22Pipeline,
    )

    source = TinySource(family)
    cpu, fp32 = torch.device("cpu"), torch.float32
    repos = REPOS[family]
    source.load_prior(cpu, fp32).diffusers_pipeline(family).save_pretrained(root / repo_folder(repos.prior))

    scheduler_class = DDPMScheduler if family is Family.K22 else DDIMScheduler
    decoder: dict[str, Any] = {
        "scheduler": scheduler_class.from_config(source.decoder_scheduler_config()),
        "movq": source.load_movq(cpu, fp32),
    }
    if family is Family.K21:
        text = source.load_decoder_text(cpu, fp32)
        decoder |= {"text_encoder": text.text_encoder, "tokenizer": text.tokenizer}
    pipelines: dict[str, tuple[UNetKind, Any]] = {
        repos.decoder: (UNetKind.TEXT2IMG, KandinskyV22Pipeline if family is Family.K22 else KandinskyPipeline),
        repos.inpaint: (
            UNetKind.INPAINT,
            KandinskyV22InpaintPipeline if family is Family.K22 else KandinskyInpaintPipeline,
        ),
    }
    if repos.controlnet is not None:
        pipelines[repos.controlnet] = (UNetKind.CONTROLNET, KandinskyV22ControlnetPipeline)
    for repo, (kind, pipeline_class) in pipelines.items():
        unet = source.load_unet(kind, cpu, fp32)
        pipeline_class(unet=unet, **decoder).save_pretrained(root / repo_folder(repo))
    return root
