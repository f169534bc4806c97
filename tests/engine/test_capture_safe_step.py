"""The capture-safe decoder step (engine.steps): the very pictures of the diffusers-scheduler loop, and
one graph for a whole run (fullgraph, no break, no recompile between steps) for every task on both tiny
models and every scheduler that has a pure form. `backend=CompileCounter` runs dynamo's capture and
then the captured graph eagerly: what a CUDA graph needs, proven without inductor or a GPU."""

import numpy as np
import pytest
import torch
from torch._dynamo.testing import CompileCounter

from kandinsky_serve.domain import GenerationRequest
from kandinsky_serve.engine import legacy, steps
from kandinsky_serve.engine.decoder import Conditioning, DenoiseJob, Inpainting, denoise
from kandinsky_serve.engine.random_weights import load_config
from kandinsky_serve.engine.schedulers import OFFERED, SCHEDULERS, SchedulerAdapter
from kandinsky_serve.engine.sources import Family
from tests.engine.test_schedulers import DECODER_CONFIG

PURE = ["DDPM", "DDIM", "Euler", "Euler a", "P-Sampler", "DPM++ 2M", "DPM++ 2M Karras", "UniPC", "PLMS"]


class TensorDenoiser(torch.nn.Module):
    """A stand-in UNet made of tensor ops only: eps from the sample, timestep and image embedding,
    and a learned-variance half in (-1, 1) for P-Sampler."""

    def forward(self, sample, timestep, encoder_hidden_states=None, added_cond_kwargs=None, return_dict=False):
        x = sample[:, :4]
        shift = added_cond_kwargs["image_embeds"].mean(1).view(-1, 1, 1, 1)
        eps = torch.tanh(0.5 * x + shift + timestep / 1000)
        return (torch.cat([eps, torch.tanh(x)], dim=1),)


def make(name: str, inpaint: bool, strength: float = 1.0, count: int = 6) -> tuple[SchedulerAdapter, DenoiseJob]:
    adapter = SchedulerAdapter(SCHEDULERS[name], DECODER_CONFIG)
    timesteps = adapter.timesteps(count, strength, torch.device("cpu"))
    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    noise = torch.cat([torch.randn(1, 4, 4, 4, generator=g) for g in generators])
    data = torch.Generator().manual_seed(99)
    embeds = torch.randn(3, 8, generator=data)
    conditioning = Conditioning({"image_embeds": embeds}, {"image_embeds": torch.zeros_like(embeds)})
    inpainting = None
    if inpaint:
        keep = (torch.rand(3, 1, 4, 4, generator=data) > 0.5).float()
        inpainting = Inpainting(torch.randn(3, 4, 4, 4, generator=data), keep, noise)
    job = DenoiseJob(noise * adapter.init_noise_sigma, conditioning, generators, timesteps, 4.0, inpainting)
    return adapter, job


def cancel_row_1_after_step_2(step, total, latents):
    return torch.tensor([True, False, True]) if step == 2 else None


@pytest.mark.parametrize("inpaint", [False, True])
@pytest.mark.parametrize("name", PURE)
def test_pure_step_gives_the_schedulers_own_result_bit_for_bit(name, inpaint):
    adapter, job = make(name, inpaint, strength=0.8)
    assert steps.plan(adapter, job.timesteps) is not None  # this scheduler does take the new path
    new = denoise(TensorDenoiser(), adapter, job, cancel_row_1_after_step_2)
    with legacy.loops():
        adapter, job = make(name, inpaint, strength=0.8)
        assert steps.plan(adapter, job.timesteps) is None
        old = denoise(TensorDenoiser(), adapter, job, cancel_row_1_after_step_2)
    # the noise handed to the step is each row's own generator's draw, also after a row is dropped mid-run
    assert new.rows.tolist() == old.rows.tolist() == [0, 2]
    assert torch.equal(new.latents, old.latents)


@pytest.mark.parametrize("inpaint", [False, True])
@pytest.mark.parametrize("name", PURE)
def test_pure_step_is_one_graph_for_the_whole_run(name, inpaint):
    torch._dynamo.reset()
    counter = CompileCounter()
    adapter, job = make(name, inpaint)
    compiled = denoise(
        TensorDenoiser(), adapter, job, wrap=lambda fn: torch.compile(fn, fullgraph=True, backend=counter)
    )
    assert counter.frame_count == 1  # 6 steps, one capture: nothing per step is baked into the graph
    adapter, job = make(name, inpaint)
    assert torch.equal(compiled.latents, denoise(TensorDenoiser(), adapter, job).latents)


# 6 steps already reach every special step (UniPC: first order and no corrector first, first order
# last; PLMS: its two warm-up steps and each history length); these also reach them at run edges
@pytest.mark.parametrize(("count", "strength"), [(1, 1.0), (2, 1.0), (3, 0.7), (12, 1.0), (12, 0.5)])
@pytest.mark.parametrize("name", ["UniPC", "PLMS"])
def test_multistep_special_steps_at_every_run_length(name, count, strength):
    adapter, job = make(name, inpaint=False, strength=strength, count=count)
    new = denoise(TensorDenoiser(), adapter, job)
    with legacy.loops():
        adapter, job = make(name, inpaint=False, strength=strength, count=count)
        old = denoise(TensorDenoiser(), adapter, job)
    assert torch.equal(new.latents, old.latents)


@pytest.mark.parametrize("family", [Family.K22, Family.K21])
def test_every_offered_scheduler_has_a_pure_form(family):
    config = load_config(f"{'k22' if family is Family.K22 else 'k21'}_decoder_scheduler")
    for name in OFFERED[family]:
        adapter = SchedulerAdapter(SCHEDULERS[name], config)
        for strength in (1.0, 0.6):
            assert steps.plan(adapter, adapter.timesteps(20, strength, torch.device("cpu"))) is not None, name


def make_request(task: str, scheduler: str | None = None, **fields) -> GenerationRequest:
    body = {"prompt": "a moss covered astronaut", "steps": 2, "prior_steps": 2, "width": 64, "height": 64}
    return GenerationRequest.parse({**body, "task": task, "seed": 5, "scheduler": scheduler, **fields})


TASKS_22 = ["text2img", "img2img", "inpaint", "fuse", "controlnet"]
TASKS_21 = ["text2img", "img2img", "inpaint"]


def inputs(task: str, photo: bytes, mask: bytes, depth: bytes) -> dict:
    return {
        "text2img": {},
        "img2img": {"image": photo, "strength": 0.9},
        "inpaint": {"image": photo, "mask": mask},
        "fuse": {"fuse": [{"prompt": "a cat", "weight": 0.6}, {"image": photo, "weight": 0.4}]},
        "controlnet": {"hint": depth},
    }[task]


# tasks whose steps are the same graph (same UNet, same inputs; only the values differ) share a capture
GROUPS = [
    ("2.2", ("text2img", "img2img", "fuse")),
    ("2.2", ("inpaint",)),
    ("2.2", ("controlnet",)),
    ("2.1", ("text2img", "img2img")),
    ("2.1", ("inpaint",)),
]


@pytest.mark.parametrize(("family", "tasks"), GROUPS)
def test_every_task_runs_its_decoder_step_as_one_graph(request_fixture, monkeypatch, family, tasks, photo, mask, depth):
    engine = request_fixture("engine22" if family == "2.2" else "engine21")
    jobs = [make_request(task, **inputs(task, photo, mask, depth)) for task in tasks]
    eager = [engine.run(job).pixels for job in jobs]
    torch._dynamo.reset()
    counter = CompileCounter()
    monkeypatch.setattr(engine, "step_wrap", lambda fn: torch.compile(fn, fullgraph=True, backend=counter))
    for job, pixels in zip(jobs, eager, strict=True):
        assert np.array_equal(engine.run(job).pixels, pixels), job.task
    # fullgraph raises on any break; one frame for every step of every task: nothing recompiled
    assert counter.frame_count == 1 and counter.op_count > 100  # the UNet is inside the graph


@pytest.fixture
def request_fixture(request):
    return request.getfixturevalue


@pytest.mark.parametrize(
    ("family", "task", "scheduler", "count"),
    [
        ("2.2", "inpaint", "DDPM", 2),
        ("2.2", "controlnet", "Euler a", 2),
        ("2.1", "img2img", "P-Sampler", 2),
        ("2.2", "text2img", "DPM++ 2M Karras", 2),
        # enough steps for the multistep special steps (img2img at 0.9 runs 5 of 6)
        ("2.1", "text2img", "PLMS", 6),
        ("2.2", "img2img", "UniPC", 6),
    ],
)
def test_engine_pictures_are_those_of_the_old_loop(request_fixture, family, task, scheduler, count, photo, mask, depth):
    engine = request_fixture("engine22" if family == "2.2" else "engine21")
    job = make_request(task, scheduler, num_images=2, steps=count, **inputs(task, photo, mask, depth))
    new = engine.run(job).pixels
    with legacy.loops():
        old = engine.run(job).pixels
    assert np.array_equal(new, old)  # bit for bit, so the batching guarantee holds as before
