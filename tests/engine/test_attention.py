"""Every attention in the engine runs on PyTorch's fused scaled-dot-product attention (SDPA).

diffusers picks the SDPA processors by default; a module loaded another way, or a processor set by
hand, can fall back to the eager softmax(QK^T)V, which is slower and holds the whole attention matrix.
The full-size architectures are built on `meta` (no memory), as the real checkpoints load into them.
"""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention

from kandinsky_serve.engine import random_weights as full
from kandinsky_serve.engine.sources import Family, UNetKind

SDPA_PROCESSORS = {"AttnProcessor2_0", "AttnAddedKVProcessor2_0"}
META = torch.device("meta")

FULL_SIZE = {
    "unet 2.2": lambda: full.build_unet(Family.K22, UNetKind.TEXT2IMG, META, torch.float16),
    "unet 2.1": lambda: full.build_unet(Family.K21, UNetKind.TEXT2IMG, META, torch.float16),
    "movq": lambda: full.build_movq(META, torch.float16),
    "prior 2.2": lambda: full.build_prior(Family.K22, META, torch.float16),
}


def processors(module: torch.nn.Module) -> set[str]:
    return {type(m.processor).__name__ for m in module.modules() if isinstance(m, Attention)}


@pytest.mark.parametrize("name", list(FULL_SIZE))
def test_full_size_modules_attend_with_sdpa(name):
    found = processors(FULL_SIZE[name]())
    assert found, f"{name} has no attention"
    assert found <= SDPA_PROCESSORS, f"{name} attends with {found - SDPA_PROCESSORS}"


@pytest.mark.parametrize("fixture", ["engine22", "engine21"])
def test_the_loaded_engine_keeps_sdpa(fixture, request):
    engine = request.getfixturevalue(fixture)
    found = processors(engine.unet(UNetKind.TEXT2IMG)) | processors(engine.movq) | processors(engine.prior.parts.prior)
    assert found and found <= SDPA_PROCESSORS
