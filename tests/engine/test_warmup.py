"""Warm-up (engine.warmup): the buckets KS_WARMUP names, run before a worker reports ready, so that a
user's first request of a warmed shape captures and compiles nothing."""

import time
from pathlib import Path

import httpx
import pytest

from kandinsky_serve.domain import GenerationRequest, ServeError
from kandinsky_serve.engine.graphs import StepGraphs
from kandinsky_serve.engine.warmup import Bucket, parse, warm_up
from kandinsky_serve.worker.messages import StateChanged, WorkerState
from kandinsky_serve.worker.process import _warm_up
from tests.engine.test_graphs import replaying
from tests.server.conftest import start_server


def test_buckets_are_sizes_then_batch_sizes():
    assert parse("768x512:1,8 512:2", max_batch=8, gpu=True, compiling=False) == [
        Bucket(768, 512, 1),
        Bucket(768, 512, 8),
        Bucket(512, 512, 2),
    ]
    assert parse("off", max_batch=8, gpu=True, compiling=True) == []


def test_auto_warms_the_common_sizes_on_a_gpu_and_nothing_eager_on_a_cpu():
    assert parse("auto", max_batch=4, gpu=True, compiling=False) == [
        Bucket(512, 512, 1),
        Bucket(512, 512, 4),
        Bucket(768, 768, 1),
        Bucket(768, 768, 4),
    ]
    assert parse("auto", max_batch=1, gpu=True, compiling=False) == [Bucket(512, 512, 1), Bucket(768, 768, 1)]
    assert parse("auto", max_batch=4, gpu=False, compiling=False) == []
    assert parse("auto", max_batch=4, gpu=False, compiling=True) == [Bucket(512, 512, 1)]


@pytest.mark.parametrize("text", ["768x", "big:1", "768:0", "768:1,,2", "32:1", "512:1000"])
def test_a_malformed_warmup_names_the_setting(text):
    with pytest.raises(ServeError) as caught:
        parse(text, max_batch=8, gpu=True, compiling=False)
    assert caught.value.field == "warmup"


def test_after_warm_up_a_request_of_a_warmed_bucket_captures_nothing(engine22):
    graphs = StepGraphs(replaying)
    engine22.use_graphs(graphs)
    seen: list[StateChanged] = []
    try:
        _warm_up(engine22, [Bucket(64, 64, 1), Bucket(64, 64, 2)], "cpu", seen.append)
        warmed = graphs.stats().captures
        assert warmed == 4  # prior and decoder, for one and for two images
        body = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 5, "prior_steps": 3}
        engine22.run_batch([GenerationRequest.parse({**body, "seed": s}) for s in (1, 2)])
        engine22.run(GenerationRequest.parse(body))
        assert graphs.stats().captures == warmed
    finally:
        engine22.use_graphs(None)
    assert [(m.state, m.detail) for m in seen] == [
        (WorkerState.WARMING, "64x64 x1 (1 of 2)"),
        (WorkerState.WARMING, "64x64 x2 (2 of 2)"),
    ]


def test_warm_up_runs_every_bucket_and_reports_its_time(engine21):
    assert warm_up(engine21, [Bucket(64, 64, 1), Bucket(128, 64, 1)]) > 0


def test_readyz_says_warming_until_the_buckets_ran(tmp_path: Path):
    # a large bucket, so that warming lasts long enough on the tiny model to be seen
    server = start_server(tmp_path / "data", KS_WARMUP="1024:1", wait_ready=False)
    seen: list[dict] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"{server.url}/readyz", timeout=5)
            except httpx.HTTPError:
                time.sleep(0.1)
                continue
            if answer.status_code == 200:
                break
            seen.extend(answer.json()["workers"])
            time.sleep(0.05)
        else:
            raise AssertionError("never ready")
        assert {"state": "warming", "detail": "1024x1024 x1 (1 of 1)"}.items() <= next(
            w for w in seen if w.get("state") == "warming"
        ).items()
        job = server.client.post("/v1/jobs?wait=60", json={"prompt": "a fox", "width": 64, "height": 64})
        assert job.json()["state"] == "succeeded"
    finally:
        server.stop()


def test_the_warmup_command_runs_the_buckets_ahead_of_a_deployment(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kandinsky_serve.cli import app

    monkeypatch.setenv("KS_DATA_DIR", str(tmp_path))
    done = CliRunner().invoke(app, ["warmup", "--model", "tiny-2.1", "--device", "cpu", "--warmup", "64:1,2"])
    assert done.exit_code == 0, done.output
    assert [line.split(" in ")[0] for line in done.output.splitlines()] == [
        "tiny-2.1 on cpu: 64x64 x1",
        "tiny-2.1 on cpu: 64x64 x2",
    ]
    refused = CliRunner().invoke(app, ["warmup", "--model", "tiny", "--warmup", "64x:1"])
    assert refused.exit_code == 2 and "--warmup" in refused.output
