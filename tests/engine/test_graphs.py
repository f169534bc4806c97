"""Steps replayed through StepGraphs (engine.graphs): one graph per bucket, the eager pictures.

A CUDA graph cannot be captured on a CPU, so these tests capture with `replaying`, which behaves as a
graph does where it matters to the bookkeeping: the step runs only on the static input buffers, and
a replay overwrites the static outputs in place. An input the wrapper forgot to copy into its buffer,
an output handed out without a copy, a bucket keyed too loosely: each changes the pictures or the
counts below. What needs the GPU itself (capture, replay speed) is checked by benchmarks/gpu.sh.
"""

import logging

import numpy as np
import pytest
import torch

from kandinsky_serve.domain import GenerationRequest
from kandinsky_serve.engine.graphs import StepGraphs, flatten


def replaying(step, args):
    out = step(*args)

    def replay():
        fresh, _ = flatten(step(*args))
        for static, value in zip(flatten(out)[0], fresh, strict=True):
            static.copy_(value)

    return out, replay


def make(**fields) -> GenerationRequest:
    body = {"prompt": "a moss covered astronaut", "steps": 3, "prior_steps": 2, "width": 64, "height": 64, "seed": 11}
    return GenerationRequest.parse({**body, **fields})


@pytest.fixture
def graphs(engine22):
    graphs = StepGraphs(replaying)
    engine22.use_graphs(graphs)
    yield graphs
    engine22.use_graphs(None)


def test_replayed_steps_draw_the_eager_pictures(engine22, photo, mask):
    jobs = [make(num_images=2), make(task="inpaint", image=photo, mask=mask), make(scheduler="DPM++ 2M")]
    eager = [engine22.run(job).pixels for job in jobs]
    graphs = StepGraphs(replaying)
    engine22.use_graphs(graphs)
    try:
        replayed = [engine22.run(job).pixels for job in jobs]
    finally:
        engine22.use_graphs(None)
    for job, a, b in zip(jobs, eager, replayed, strict=True):
        assert np.array_equal(a, b), job.task
    assert graphs.stats().replays > 0


def kept(graphs: StepGraphs, kind: str) -> int:
    return sum(1 for key in graphs.stats().buckets if key[0][0] == kind)


def test_one_graph_per_bucket_captured_once(engine22, graphs):
    engine22.run(make())
    first = graphs.stats()
    assert (kept(graphs, "prior"), kept(graphs, "decoder")) == (1, 1)
    engine22.run(make(prompt="another prompt", seed=3, steps=5))  # other values, the same shapes
    again = graphs.stats()
    assert again.captures == first.captures  # nothing new to capture
    assert again.replays > first.replays
    engine22.run(make(num_images=3))  # another batch size: its own prior and decoder graphs
    assert (kept(graphs, "prior"), kept(graphs, "decoder")) == (2, 2)
    engine22.run(make(width=96))  # another image size: the prior's graph is the same
    assert (kept(graphs, "prior"), kept(graphs, "decoder")) == (2, 3)
    engine22.run(make(scheduler="DDIM"))  # another scheduler: another decoder graph at the same shape
    assert (kept(graphs, "prior"), kept(graphs, "decoder")) == (2, 4)
    assert graphs.stats().captures == 6


def test_a_canceled_row_continues_on_a_graph_of_the_smaller_batch(engine22):
    def cancel_second_request_at_decoder_step_1():
        calls = {"n": 0}

        def check() -> bool:
            calls["n"] += 1
            return calls["n"] > 3  # after the prior's 2 steps and the decoder's first

        return check

    jobs = [make(seed=1), make(seed=2), make(seed=3)]
    eager = engine22.run_batch(jobs, cancels=[None, cancel_second_request_at_decoder_step_1(), None])
    graphs = StepGraphs(replaying)
    engine22.use_graphs(graphs)
    try:
        replayed = engine22.run_batch(jobs, cancels=[None, cancel_second_request_at_decoder_step_1(), None])
    finally:
        engine22.use_graphs(None)
    assert eager[1] is None and replayed[1] is None
    for a, b in ((eager[0], replayed[0]), (eager[2], replayed[2])):
        assert a is not None and b is not None and np.array_equal(a.pixels, b.pixels)
    assert kept(graphs, "decoder") == 2  # 3 rows, then 2


def test_a_step_that_cannot_be_captured_runs_eagerly(engine22, caplog):
    def refuse(step, args):
        raise RuntimeError("operation not permitted when stream is capturing")

    expected = engine22.run(make()).pixels
    graphs = StepGraphs(refuse)
    engine22.use_graphs(graphs)
    try:
        with caplog.at_level(logging.WARNING, logger="kandinsky_serve.engine.graphs"):
            first = engine22.run(make()).pixels
            second = engine22.run(make()).pixels
    finally:
        engine22.use_graphs(None)
    assert np.array_equal(first, expected) and np.array_equal(second, expected)
    stats = graphs.stats()
    assert stats.captures == 0 and stats.eager > 0
    # one warning per step kind (prior, decoder), not one per step or per request
    assert len([r for r in caplog.records if "runs eagerly" in r.message]) == 2


class Doubler:
    signature = ("doubler",)

    def __call__(self, x, extra):
        return x * 2 + extra["bias"], None


def test_the_limit_drops_the_least_recently_used_graph():
    graphs = StepGraphs(replaying, limit=2)
    step = graphs(Doubler())
    bias = {"bias": torch.ones(1)}
    for rows in (1, 2, 1, 3):  # 1 was used again after 2, so 2 goes when 3 comes
        step(torch.zeros(rows, 4), bias)
    kept = {key[1][1][0][1][0] for key in graphs.stats().buckets}  # each graph's row count
    assert kept == {1, 3}
    assert graphs.stats().captures == 3


def test_outputs_are_copies_and_inputs_are_read_at_each_call():
    graphs = StepGraphs(replaying)
    step = graphs(Doubler())
    bias = {"bias": torch.zeros(1)}
    first, _ = step(torch.ones(2, 4), bias)
    second, _ = step(torch.full((2, 4), 5.0), bias)  # the same graph, another input
    assert torch.equal(first, torch.full((2, 4), 2.0))  # not overwritten by the second replay
    assert torch.equal(second, torch.full((2, 4), 10.0))
    bias["bias"] = torch.ones(1)  # a new tensor under the same name is copied in
    third, _ = step(torch.ones(2, 4), bias)
    assert torch.equal(third, torch.full((2, 4), 3.0))
    assert graphs.stats().captures == 1


def test_steps_take_tensors_only():
    step = StepGraphs(replaying)(Doubler())
    with pytest.raises(TypeError, match="tensors only"):
        step(torch.ones(1), {"bias": 1.0})
