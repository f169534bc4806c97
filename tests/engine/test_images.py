import numpy as np
import pytest
import torch
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_inpainting import prepare_mask
from PIL import Image

from kandinsky_serve.engine.images import generation_size, grow_repaint, mask_to_keep, to_requested_size


@pytest.mark.parametrize("hw", [(8, 8), (12, 10), (13, 7)])
def test_mask_growth_equals_diffusers_prepare_mask(hw):
    generator = torch.Generator().manual_seed(1)
    keep = (torch.rand(3, 1, *hw, generator=generator) > 0.3).float()
    assert torch.equal(grow_repaint(keep), prepare_mask(keep.clone()))


def test_white_is_repainted_black_is_kept():
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))  # left half white
    keep = mask_to_keep(mask, 64, 64, (8, 8))[0, 0]
    assert keep[:, :4].sum() == 0  # repaint
    assert keep[:, 5:].min() == 1  # keep, past the one-pixel growth


def test_generation_size_rounds_up_to_the_model_multiple():
    assert generation_size(96, 80, 16) == (96, 80)
    assert generation_size(500, 700, 64) == (512, 704)


def test_exact_size_by_centre_crop_or_resize():
    pixels = torch.rand(2, 3, 64, 128)
    cropped = to_requested_size(pixels, 100, 50, resize=False)
    assert cropped.shape == (2, 3, 50, 100)
    assert torch.equal(cropped, pixels[..., 7:57, 14:114])
    resized = to_requested_size(pixels, 100, 50, resize=True)
    assert resized.shape == (2, 3, 50, 100)
    assert float(resized.min()) >= 0.0 and float(resized.max()) <= 1.0
    assert np.isfinite(resized.numpy()).all()
