"""MoVQ decoding in tiles: the same picture as a whole decode, in less memory."""

from itertools import pairwise
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kandinsky_serve.domain import GenerationRequest
from kandinsky_serve.engine.tiling import DecodeTiling, decode, decode_tiled, decode_whole, should_tile, spans


class Upsampler:
    """A decoder without context (each latent pixel becomes an 8x8 block): tiles must add nothing."""

    def __init__(self, fail_above: int | None = None, error: RuntimeError | None = None) -> None:
        self.fail_above = fail_above
        self.error = error or torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 16.00 GiB")
        self.calls: list[tuple[int, int]] = []

    def decode(self, latents, force_not_quantize=False):
        assert force_not_quantize
        self.calls.append(tuple(latents.shape[-2:]))
        if self.fail_above is not None and latents.shape[-2] * latents.shape[-1] > self.fail_above:
            raise self.error
        return SimpleNamespace(sample=F.interpolate(latents[:, :3] * 2 + 1, scale_factor=8, mode="nearest"))


def _pixels(decoded: torch.Tensor) -> torch.Tensor:
    return (decoded * 0.5 + 0.5).clamp(0, 1)


@pytest.mark.parametrize(("length", "tile", "overlap"), [(256, 96, 24), (57, 16, 4), (17, 16, 5), (100, 9, 3)])
def test_tiles_cover_the_axis_evenly_with_at_least_the_overlap_and_never_three_deep(length, tile, overlap):
    tiles = spans(length, tile, overlap)
    assert tiles[0][0] == 0 and tiles[-1][1] == length
    assert len({end - start for start, end in tiles}) == 1 and tiles[0][1] <= tile
    assert all(end - start >= overlap for (_, end), (start, _) in pairwise(tiles))
    assert all(end <= start for (_, end), (start, _) in zip(tiles, tiles[2:], strict=False))


def test_an_axis_within_one_tile_is_not_split():
    assert spans(96, 96, 24) == [(0, 96)]


def test_a_2048_square_is_tiled_in_16_tiles_of_656_pixels():
    tiles = spans(256, 96, 24)
    assert len(tiles) == 4 and tiles[0] == (0, 82)


def test_the_default_rule_keeps_1024_square_whole_and_tiles_anything_larger():
    assert not should_tile(128, 128)
    assert should_tile(136, 128)  # 1088x1024
    assert should_tile(256, 256)
    assert not should_tile(256, 32)  # 2048x256 has fewer pixels than 1024x1024


def test_tilings_that_would_blend_unevenly_are_refused():
    with pytest.raises(ValueError, match="third"):
        DecodeTiling(tile=12, overlap=5)
    with pytest.raises(ValueError):
        DecodeTiling(tile=0)


@pytest.mark.parametrize("latent_hw", [(17, 33), (16, 16), (5, 70), (40, 9)])
def test_tiled_output_has_the_whole_decodes_exact_shape_and_dtype(engine22, latent_hw):
    latents = torch.randn(2, 4, *latent_hw, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        tiled = decode_tiled(engine22.movq, latents, tile=16, overlap=4)
    assert tiled.shape == (2, 3, latent_hw[0] * 8, latent_hw[1] * 8)
    assert tiled.dtype == latents.dtype


def test_without_context_the_tiles_blend_back_into_exactly_the_whole():
    latents = torch.randn(2, 4, 29, 45, generator=torch.Generator().manual_seed(1))
    upsampler = Upsampler()
    torch.testing.assert_close(decode_tiled(upsampler, latents, 12, 4), decode_whole(upsampler, latents))
    assert len(upsampler.calls) == len(spans(29, 12, 4)) * len(spans(45, 12, 4)) + 1


def test_half_precision_tiles_are_blended_in_float32_and_come_back_in_half_precision():
    latents = torch.randn(1, 4, 20, 30, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    tiled = decode_tiled(Upsampler(), latents, 12, 4)
    assert tiled.dtype == torch.bfloat16
    torch.testing.assert_close(tiled, decode_whole(Upsampler(), latents))


def test_a_tiled_decode_of_the_tiny_movq_is_close_to_the_whole_one(engine22):
    # The tiles differ inside too, not only at the seams: GroupNorm statistics are per tile. The
    # random tiny MoVQ amplifies that into a few far-off pixels (measured over seeds 0-4: mean
    # 0.006-0.010, p99 0.05-0.08, single pixels up to 0.9), but no 8x8 block drifts (at most 0.21).
    latents = torch.randn(1, 4, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        whole = _pixels(decode_whole(engine22.movq, latents))
        tiled = _pixels(decode_tiled(engine22.movq, latents, tile=24, overlap=6))
    difference = (whole - tiled).abs()
    assert float(difference.mean()) < 0.015
    assert float(difference.flatten().quantile(0.99)) < 0.12
    assert float(F.avg_pool2d(difference, 8).max()) < 0.3


def test_a_decode_above_the_threshold_is_tiled_and_one_below_is_not():
    latents = torch.randn(1, 4, 20, 20)
    tiled, whole = Upsampler(), Upsampler()
    decode(tiled, latents, DecodeTiling(above=399, tile=12, overlap=4))
    decode(whole, latents, DecodeTiling(above=400, tile=12, overlap=4))
    assert tiled.calls == [(12, 12)] * 4
    assert whole.calls == [(20, 20)]


def test_a_whole_decode_that_runs_out_of_memory_is_retried_in_tiles():
    latents = torch.randn(1, 4, 20, 20, generator=torch.Generator().manual_seed(2))
    upsampler = Upsampler(fail_above=12 * 12)
    pixels = decode(upsampler, latents, DecodeTiling(tile=12, overlap=4))
    assert upsampler.calls == [(20, 20)] + [(12, 12)] * 4
    torch.testing.assert_close(pixels, decode_whole(Upsampler(), latents))


def test_a_cpu_allocation_failure_counts_as_out_of_memory_but_other_errors_do_not():
    latents = torch.randn(1, 4, 20, 20)
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
    upsampler = Upsampler(fail_above=144, error=cpu)
    decode(upsampler, latents, DecodeTiling(tile=12, overlap=4))
    assert upsampler.calls == [(20, 20)] + [(12, 12)] * 4

    class Broken(Upsampler):
        def decode(self, latents, force_not_quantize=False):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        decode(Broken(), latents, DecodeTiling(tile=12, overlap=4))


def test_out_of_memory_with_nothing_to_split_is_not_retried():
    upsampler = Upsampler(fail_above=0)
    with pytest.raises(torch.OutOfMemoryError):
        decode(upsampler, torch.randn(1, 4, 12, 12), DecodeTiling(tile=12, overlap=4))
    assert upsampler.calls == [(12, 12)]


def test_an_engine_run_above_its_tiling_threshold_is_the_right_size_and_close_to_untiled(engine22, monkeypatch):
    request = GenerationRequest(
        model="tiny", prompt="a lighthouse", width=320, height=192, steps=4, prior_steps=2, seed=7
    )
    whole = engine22.run(request).pixels
    # 320x192 is 40x24 latents: two tiles of 23x24
    monkeypatch.setattr(engine22, "decode_tiling", DecodeTiling(above=64, tile=24, overlap=6))
    tiled = engine22.run(request).pixels
    assert tiled.shape == whole.shape == (1, 192, 320, 3)
    # The tiny model's pictures are near black-and-white noise, so the per-tile GroupNorm statistics
    # flip single pixels outright; on average they move little (measured 0.017-0.022 over seeds 7-9).
    difference = np.abs(tiled - whole)
    assert float(difference.mean()) < 0.04
    assert not np.array_equal(tiled, whole)  # the tiles really were decoded apart
