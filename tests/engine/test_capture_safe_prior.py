"""The capture-safe prior step (engine.prior_step): the very embeddings of diffusers' UnCLIPScheduler loop,
and one graph for a whole sample() run (fullgraph, no break, no recompile between steps), the prior
transformer inside it. `backend=CompileCounter` runs dynamo's capture and then the captured graph
eagerly: what a CUDA graph needs, proven without inductor or a GPU."""

import pytest
import torch
from diffusers import UnCLIPScheduler
from torch._dynamo.testing import CompileCounter

from kandinsky_serve.engine import legacy, prior_step
from kandinsky_serve.engine.prior import PriorRow, PriorRunner


@pytest.fixture
def request_fixture(request):
    return request.getfixturevalue


def rows() -> list[PriorRow]:
    # rows 0 and 2 share a generator (a fuse's two prompts): the draws interleave as in diffusers
    shared = torch.Generator().manual_seed(7)
    return [
        PriorRow("a moss covered astronaut", "", shared),
        PriorRow("a red fox in snow", "blurry, low quality", torch.Generator().manual_seed(11)),
        PriorRow("a lighthouse at dusk", "", shared),
        PriorRow("blurry, low quality", "blurry, low quality", torch.Generator().manual_seed(3)),
    ]


def sample(prior: PriorRunner, steps: int, guidance: float, progress: list | None = None) -> torch.Tensor:
    on_step = None if progress is None else (lambda i, n: progress.append((i, n)))
    return prior.sample(rows(), steps, guidance, on_step=on_step)


@pytest.mark.parametrize("family", ["engine22", "engine21"])
@pytest.mark.parametrize("steps", [1, 2, 5])
@pytest.mark.parametrize("guidance", [4.3, 1.0])
def test_prior_step_gives_the_old_loops_embeddings_bit_for_bit(request_fixture, family, steps, guidance):
    prior = request_fixture(family).prior
    new_progress: list = []
    new = sample(prior, steps, guidance, new_progress)
    with legacy.loops():
        old_progress: list = []
        old = sample(prior, steps, guidance, old_progress)
    assert new.dtype == torch.float32 and new.shape == (4, prior.embedding_dim)
    assert torch.equal(new, old)
    assert new_progress == old_progress == [(i + 1, steps) for i in range(steps)]
    # not trivially equal: the rows differ, and so do runs of other lengths
    assert not torch.equal(new[0], new[2])
    assert not torch.equal(new, sample(prior, steps + 1, guidance))


def test_the_legacy_switch_is_diffusers_own_loop(engine22, monkeypatch):
    """The reference itself: under legacy.loops(), UnCLIPScheduler.step runs once per step."""
    calls = []
    original = UnCLIPScheduler.step
    monkeypatch.setattr(UnCLIPScheduler, "step", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    sample(engine22.prior, 3, 4.0)
    assert calls == []
    with legacy.loops():
        sample(engine22.prior, 3, 4.0)
    assert len(calls) == 3


def unclip(**config) -> UnCLIPScheduler:
    scheduler = UnCLIPScheduler(**config)
    scheduler.set_timesteps(6)
    return scheduler


@pytest.mark.parametrize(
    "config",
    [
        {"prediction_type": "sample", "clip_sample_range": 10.0},  # the Kandinsky priors' own
        {"prediction_type": "epsilon", "clip_sample": False},
        {"prediction_type": "epsilon", "variance_type": "learned_range"},
    ],
)
def test_update_is_the_schedulers_step_for_each_variant(config):
    """Against UnCLIPScheduler.step called directly, every timestep and prev_timestep form (its t - 1
    default included), learned_range with a model output that carries the variance half."""
    scheduler = unclip(**config)
    timesteps = scheduler.timesteps
    prevs = [*timesteps[1:], -1]
    learned = config.get("variance_type") == "learned_range"
    timesteps, prevs = torch.cat([timesteps, torch.tensor([40])]), [*prevs, 39]  # the t - 1 branch
    schedule = prior_step.plan(scheduler, timesteps, prevs)
    assert schedule.draws == [bool(t > 0) for t in timesteps]
    data = torch.Generator().manual_seed(0)
    latents = torch.randn(3, 8, generator=data) * 3
    for i, (t, prev) in enumerate(zip(timesteps, prevs, strict=True)):
        out = torch.randn(3, 16 if learned else 8, generator=data) * 4
        generators = [torch.Generator().manual_seed(100 + i + r) for r in range(3)]
        noise = prior_step.draw_noise(generators, 8, schedule.draws[i : i + 1], torch.float32)[0]
        generators = [torch.Generator().manual_seed(100 + i + r) for r in range(3)]
        expected = scheduler.step(out, t, latents, prev_timestep=prev, generator=generators).prev_sample
        got = schedule.update(out, latents, schedule.coefs[i], noise)
        assert torch.equal(got, expected), (config, int(t))
        latents = expected


def test_learned_range_without_a_variance_half_is_refused():
    scheduler = unclip(variance_type="learned_range")
    schedule = prior_step.plan(scheduler, scheduler.timesteps, [*scheduler.timesteps[1:], -1])
    with pytest.raises(ValueError, match="twice as wide"):
        schedule.update(torch.zeros(1, 8), torch.zeros(1, 8), schedule.coefs[0], torch.zeros(1, 8))


@pytest.mark.parametrize("family", ["engine22", "engine21"])
def test_a_whole_sample_run_is_one_graph(request_fixture, monkeypatch, family):
    prior = request_fixture(family).prior
    eager = [sample(prior, 4, 4.0), sample(prior, 3, 6.5)]
    torch._dynamo.reset()
    counter = CompileCounter()
    monkeypatch.setattr(prior, "wrap", lambda fn: torch.compile(fn, fullgraph=True, backend=counter))
    progress: list = []
    # two runs of other lengths and guidance: timesteps, coefficients, noise and guidance are inputs
    assert torch.equal(sample(prior, 4, 4.0, progress), eager[0])
    assert torch.equal(sample(prior, 3, 6.5), eager[1])
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]  # the callback still runs per step, on the host
    # fullgraph raises on any break; one frame for every step of both runs: nothing recompiled;
    # the prior transformer's layers are inside the graph, not only the scheduler's arithmetic
    assert counter.frame_count == 1 and counter.op_count > 60


def test_wrap_defaults_to_the_plain_step(engine22):
    step = prior_step.PriorStep(engine22.prior.parts.prior, prior_step.plan(unclip(), torch.tensor([999]), [-1]), True)
    assert engine22.prior.wrap(step) is step
