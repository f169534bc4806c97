"""The shipped configs are the real checkpoints: built on `meta`, each has exactly the parameter count of
the published weights (reference notes, kandinsky-models.md §1)."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UnCLIPScheduler

from kandinsky_serve.engine import random_weights as full
from kandinsky_serve.engine.random_weights import load_config
from kandinsky_serve.engine.sources import Family, UNetKind

META = torch.device("meta")
K22, K21 = Family.K22, Family.K21

PARAMETER_COUNTS = [
    ("unet 2.2", lambda: full.build_unet(K22, UNetKind.TEXT2IMG, META, torch.float16), 1_253_057_288),
    ("unet 2.2 inpaint", lambda: full.build_unet(K22, UNetKind.INPAINT, META, torch.float16), 1_253_074_568),
    ("unet 2.2 controlnet", lambda: full.build_unet(K22, UNetKind.CONTROLNET, META, torch.float16), 1_253_429_212),
    ("unet 2.1", lambda: full.build_unet(K21, UNetKind.TEXT2IMG, META, torch.float16), 1_228_661_768),
    ("unet 2.1 inpaint", lambda: full.build_unet(K21, UNetKind.INPAINT, META, torch.float16), 1_228_679_048),
    ("movq", lambda: full.build_movq(META, torch.float16), 67_832_495),
    ("prior 2.2", lambda: full.build_prior(K22, META, torch.float16), 1_026_225_920),
    ("prior 2.1", lambda: full.build_prior(K21, META, torch.float16), 1_022_030_080),
    ("ViT-bigG vision", lambda: full.build_image_encoder(K22, META, torch.float16), 1_844_907_264),
    ("bigG text", lambda: full.build_text_encoder(K22, META, torch.float16), 694_659_840),
    ("ViT-L vision", lambda: full.build_image_encoder(K21, META, torch.float16), 303_966_208),
    ("ViT-L text", lambda: full.build_text_encoder(K21, META, torch.float16), 123_650_304),
    ("M-CLIP", lambda: full.build_mclip(META, torch.float16), 560_677_632),
]


@pytest.mark.parametrize(("name", "build", "count"), PARAMETER_COUNTS, ids=[c[0] for c in PARAMETER_COUNTS])
def test_full_size_architecture_matches_the_published_checkpoint(name, build, count):
    module = build()
    assert sum(p.numel() for p in module.parameters()) == count
    assert {(p.device.type, p.dtype) for p in module.parameters()} == {("meta", torch.float16)}


@pytest.mark.parametrize("family", list(Family))
def test_prior_output_feeds_the_decoder_unet(family):
    prior = load_config(f"{family_prefix(family)}_prior")
    image_encoder = load_config(f"{family_prefix(family)}_image_encoder")
    unet = load_config(f"{family_prefix(family)}_unet")
    assert prior["embedding_dim"] == image_encoder["projection_dim"]
    if family is Family.K22:
        assert unet["encoder_hid_dim"] == prior["embedding_dim"] == 1280
    else:
        # 2.1: image and pooled M-CLIP text embeddings at the cross-attention width, hidden states at XLM-R's.
        mclip = load_config("k21_mclip_text_encoder")
        assert unet["cross_attention_dim"] == prior["embedding_dim"] == mclip["numDims"] == 768
        assert unet["encoder_hid_dim"] == mclip["transformerDimensions"] == 1024


def family_prefix(family):
    return "k22" if family is Family.K22 else "k21"


@pytest.mark.parametrize(
    ("name", "scheduler_class"),
    [
        ("k22_decoder_scheduler", DDPMScheduler),
        ("k21_decoder_scheduler", DDIMScheduler),
        ("k21_ddpm_scheduler", DDPMScheduler),
    ],
)
def test_decoder_schedulers_share_the_kandinsky_noise_schedule(name, scheduler_class):
    scheduler = scheduler_class.from_config(load_config(name))
    assert scheduler.betas[0].item() == pytest.approx(0.00085)
    assert scheduler.betas[-1].item() == pytest.approx(0.012)
    assert scheduler.config.prediction_type == "epsilon"


def test_prior_scheduler_predicts_the_sample():
    scheduler = UnCLIPScheduler.from_config(load_config("prior_scheduler"))
    assert scheduler.config.prediction_type == "sample"
    assert scheduler.config.variance_type == "fixed_small_log"
