"""The engine on the built-in tiny models: every task, exact sizes, seeds, batching, cancel."""

import numpy as np
import pytest
import torch

from kandinsky_serve.domain import ErrorCode, GenerationRequest, ServeError, Stage
from kandinsky_serve.domain.errors import Canceled
from kandinsky_serve.engine.prior import PriorRunner
from tests.engine.batching import assert_batching_guarantee

FAST = {"steps": 4, "prior_steps": 3}


def make(**fields) -> GenerationRequest:
    return GenerationRequest.parse({"prompt": "a moss covered astronaut", **FAST, **fields})


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max())


@pytest.mark.parametrize(("width", "height"), [(96, 80), (64, 64), (100, 130)])
def test_text2img_gives_exactly_the_requested_size_and_count(engine22, width, height):
    result = engine22.run(make(width=width, height=height, num_images=2, seed=1))
    assert result.pixels.shape == (2, height, width, 3)
    assert [image.size for image in result.images] == [(width, height)] * 2
    assert np.isfinite(result.pixels).all()


def test_every_22_task_runs(engine22, photo, mask, depth):
    tasks = {
        "img2img": {"image": photo, "strength": 0.5},
        "inpaint": {"image": photo, "mask": mask},
        "controlnet": {"hint": depth},
        "fuse": {"fuse": [{"prompt": "a cat", "weight": 0.6}, {"image": photo, "weight": 0.4}]},
    }
    for task, inputs in tasks.items():
        result = engine22.run(make(task=task, width=96, height=80, num_images=2, seed=3, **inputs))
        assert result.pixels.shape == (2, 80, 96, 3), task


def test_every_21_task_runs(engine21, photo, mask):
    tasks = {
        "text2img": {},
        "img2img": {"image": photo, "strength": 0.5},
        "inpaint": {"image": photo, "mask": mask},
        "fuse": {"fuse": [{"prompt": "a cat", "weight": 0.5}, {"prompt": "a dog", "weight": 0.5}]},
    }
    for task, inputs in tasks.items():
        result = engine21.run(make(task=task, width=96, height=80, num_images=2, seed=3, **inputs))
        assert result.pixels.shape == (2, 80, 96, 3), task


def test_prior_task_returns_the_embeddings_a_decoder_takes(engine22):
    result = engine22.run(make(task="prior", num_images=3, seed=5))
    dim = engine22.prior.embedding_dim
    assert result.image_embeds.shape == (3, dim)
    assert result.negative_image_embeds.shape == (3, dim)
    assert result.images == []


@pytest.mark.parametrize("fixture", ["engine22", "engine21"])
def test_every_offered_scheduler_runs(request, fixture):
    engine = request.getfixturevalue(fixture)
    from kandinsky_serve.engine.schedulers import OFFERED

    for name in OFFERED[engine.family]:
        result = engine.run(make(width=64, height=64, scheduler=name, seed=2, negative_prompt="blurry"))
        assert np.isfinite(result.pixels).all(), name


def test_same_seed_same_image_other_seed_other_image(engine22):
    first = engine22.run(make(width=64, height=64, seed=11))
    again = engine22.run(make(width=64, height=64, seed=11))
    other = engine22.run(make(width=64, height=64, seed=12))
    assert np.array_equal(first.pixels, again.pixels)
    assert max_diff(first.pixels, other.pixels) > 0.01


@pytest.mark.parametrize("fixture", ["engine22", "engine21"])
def test_image_i_of_a_request_equals_a_single_run_with_seed_plus_i(request, fixture):
    # equal within the batching guarantee (tests/engine/batching.py), not bit for bit
    engine = request.getfixturevalue(fixture)
    several = engine.run(make(width=96, height=80, num_images=3, seed=42, negative_prompt="ugly"))
    assert several.seeds == [42, 43, 44]
    singles = [engine.run(make(width=96, height=80, seed=42 + i, negative_prompt="ugly")).pixels[0] for i in range(3)]
    for i in range(3):
        assert_batching_guarantee(several.pixels[i], singles[i])
    with pytest.raises(AssertionError):  # the check tells seeds apart: image 0 is not seed 43's picture
        assert_batching_guarantee(several.pixels[0], singles[1])


@pytest.mark.parametrize("fixture", ["engine22", "engine21"])
def test_a_batch_of_four_requests_equals_four_single_runs(request, fixture):
    engine = request.getfixturevalue(fixture)
    batch = [
        make(prompt="a red fox", seed=1),
        make(prompt="a blue whale", seed=2, negative_prompt="low quality"),
        make(prompt="a green frog", seed=3, num_images=2),
        make(prompt="a red fox", seed=1),
    ]
    batch = [r.model_copy(update={"width": 64, "height": 64}) for r in batch]
    assert len({r.batch_key for r in batch}) == 1
    together = engine.run_batch(batch)
    for one, result in zip(batch, together, strict=True):
        assert_batching_guarantee(result.pixels, engine.run(one).pixels)


@pytest.mark.parametrize("fixture", ["engine22", "engine21"])
def test_the_same_batch_again_gives_the_same_pictures_bit_for_bit(request, fixture):
    engine = request.getfixturevalue(fixture)
    batch = [make(prompt="a red fox", seed=5, num_images=2), make(prompt="a blue whale", seed=6)]
    batch = [r.model_copy(update={"width": 64, "height": 64}) for r in batch]
    first, again = engine.run_batch(batch), engine.run_batch(batch)
    for one, other in zip(first, again, strict=True):
        assert np.array_equal(one.pixels, other.pixels)


@pytest.mark.parametrize("fixture", ["engine22", "engine21"])
def test_a_texts_encoding_never_depends_on_what_was_encoded_with_it(request, fixture):
    # else a lone job gets other bits after a restart (cold cache: its prompt encoded together with
    # the empty negative) than later (warm cache: encoded alone)
    engine = request.getfixturevalue(fixture)
    texts = ["", "a moss covered astronaut", "a lighthouse", "a red fox"]
    together = PriorRunner(engine.prior.parts, engine.device, engine.dtype).encode_texts(texts)
    for i, text in enumerate(texts):
        alone = PriorRunner(engine.prior.parts, engine.device, engine.dtype).encode_texts([text])
        for part, single in zip(together, alone, strict=True):
            assert torch.equal(part[i : i + 1], single), text


def test_batched_inpaint_keeps_each_requests_own_image_and_mask(engine22, photo, mask, depth):
    # diffusers blends every row with image[:1] and mask[:1]; each row must keep its own
    first = make(task="inpaint", image=photo, mask=mask, seed=7, width=64, height=64)
    second = make(task="inpaint", image=depth, mask=photo, seed=8, width=64, height=64)
    together = engine22.run_batch([first, second])
    assert_batching_guarantee(together[1].pixels, engine22.run(second).pixels)
    assert_batching_guarantee(together[0].pixels, engine22.run(first).pixels)


@pytest.mark.parametrize("fixture", ["engine22", "engine21"])
def test_guidance_off_with_several_images(request, fixture):
    engine = request.getfixturevalue(fixture)
    result = engine.run(make(width=64, height=64, num_images=3, guidance_scale=1.0, prior_guidance_scale=1.0))
    assert result.pixels.shape == (3, 64, 64, 3)


def test_progress_reports_every_prior_and_decoder_step(engine22, photo):
    events = []
    engine22.run(make(task="img2img", image=photo, strength=0.5, steps=8, width=64, height=64), events.append)
    prior = [(e.step, e.total) for e in events if e.stage is Stage.PRIOR]
    decoder = [(e.step, e.total) for e in events if e.stage is Stage.DECODER]
    assert prior == [(i, 3) for i in range(1, 4)]
    assert decoder == [(i, 4) for i in range(1, 5)]  # img2img at strength 0.5 runs half the steps


def test_cancel_stops_within_one_step(engine22):
    events = []
    canceled = False

    def on_progress(event):
        nonlocal canceled
        events.append(event)
        canceled = canceled or (event.stage is Stage.DECODER and event.step == 2)

    with pytest.raises(Canceled):
        engine22.run(make(steps=20, width=64, height=64), on_progress, cancel=lambda: canceled)
    decoder_steps = [e.step for e in events if e.stage is Stage.DECODER]
    assert decoder_steps == [1, 2]


@pytest.mark.parametrize("scheduler", ["DDPM", "DPM++ 2M", "UniPC"])
def test_canceling_one_request_leaves_the_rest_of_its_batch_untouched(engine22, scheduler):
    fields = {"width": 64, "height": 64, "steps": 6, "scheduler": scheduler}
    doomed, survivor = make(seed=1, **fields), make(seed=2, num_images=2, prompt="a lighthouse", **fields)
    steps_seen = 0

    def count(event):
        nonlocal steps_seen
        steps_seen += event.stage is Stage.DECODER

    results = engine22.run_batch([doomed, survivor], count, [lambda: steps_seen >= 3, None])
    assert results[0] is None
    assert_batching_guarantee(results[1].pixels, engine22.run(survivor).pixels)


def test_zero_image_embedding_is_computed_once(engine22):
    calls = 0

    def hook(*_):
        nonlocal calls
        calls += 1

    engine22.prior.zero_embed()  # warm
    handle = engine22.prior.parts.image_encoder.register_forward_hook(hook)
    try:
        engine22.run(make(width=64, height=64, seed=1))
        engine22.run(make(width=64, height=64, seed=2))
    finally:
        handle.remove()
    assert calls == 0


def test_family_limits_are_clear_errors(engine21, depth):
    with pytest.raises(ServeError) as info:
        engine21.run(make(task="controlnet", hint=depth, width=64, height=64))
    assert info.value.field == "task"
    assert "not available for tiny-2.1" in info.value.message
    with pytest.raises(ServeError) as info:
        engine21.run(make(scheduler="Euler a"))
    assert info.value.field == "scheduler"


def test_out_of_memory_is_reported_and_the_engine_survives(engine22, monkeypatch):
    unet = engine22.unet("text2img")
    real_forward = unet.forward

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(unet, "forward", exhausted)
    with pytest.raises(ServeError) as info:
        engine22.run(make(width=64, height=64, num_images=2))
    assert info.value.code is ErrorCode.OUT_OF_MEMORY
    assert "2 image(s) at 64x64" in info.value.message
    monkeypatch.setattr(unet, "forward", real_forward)
    assert engine22.run(make(width=64, height=64)).pixels.shape == (1, 64, 64, 3)


def test_controlnet_hint_block_runs_once_per_run_and_never_serves_a_stale_hint(engine22, depth, photo):
    hint_block = engine22.unet("controlnet").add_embedding.input_hint_block.block
    calls = 0

    def hook(*_):
        nonlocal calls
        calls += 1

    handle = hint_block.register_forward_hook(hook)
    try:
        near = engine22.run(make(task="controlnet", hint=depth, steps=6, width=64, height=64, seed=4))
        other = engine22.run(make(task="controlnet", hint=photo, steps=6, width=64, height=64, seed=4))
    finally:
        handle.remove()
    assert calls == 2
    assert max_diff(near.pixels, other.pixels) > 1e-3


@pytest.mark.parametrize("fixture", ["engine22", "engine21"])
def test_a_one_step_prior_works(request, fixture):
    # Segmind allows prior_steps 1; UnCLIP's own set_timesteps(1) divides by zero
    engine = request.getfixturevalue(fixture)
    result = engine.run(make(task="prior", prior_steps=1, seed=3))
    assert np.isfinite(result.image_embeds).all()
    assert np.abs(result.image_embeds).max() > 0
