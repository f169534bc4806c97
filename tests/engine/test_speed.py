"""Engine speed options: compiled and channels_last engines draw the eager engine's pictures.

Compiling the tiny UNet costs one to two minutes on a 2-core CPU the first time; inductor keeps the
kernels in torch's cache folder (under /tmp), so later runs of these tests take seconds.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from kandinsky_serve.domain import GenerationRequest, Stage
from kandinsky_serve.engine.engine import Engine
from kandinsky_serve.engine.sources import UNetKind
from kandinsky_serve.engine.speed import EngineOptions
from kandinsky_serve.settings import Settings
from tests.compiler import needs_compiler

FAST = {"width": 64, "height": 64, "steps": 4, "prior_steps": 2}
TOLERANCE = 1e-3  # pixels in [0, 1]: a quarter of an 8-bit level, far below any real difference


def make(**fields) -> GenerationRequest:
    return GenerationRequest.parse({"prompt": "a moss covered astronaut", **FAST, **fields})


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max())


def is_compiled(module: torch.nn.Module) -> bool:
    return module._compiled_call_impl is not None  # what nn.Module.compile sets


@pytest.fixture(scope="module")
def compiled():
    # torch's default cache folder, so the second run of this file starts warm
    return Engine.create("tiny", "cpu", options=EngineOptions(compile="all"))


def test_options_come_from_the_settings_with_the_cache_in_the_data_dir(tmp_path):
    settings = Settings(data_dir=tmp_path, compile="unet", channels_last=True)
    assert EngineOptions.from_settings(settings) == EngineOptions("unet", True, tmp_path / "compile-cache")
    assert EngineOptions.from_settings(Settings(data_dir=tmp_path)) == EngineOptions(
        "off", None, tmp_path / "compile-cache"
    )  # channels_last settled per device by the engine (EngineOptions.for_device)


@pytest.mark.parametrize(
    ("target", "unet", "movq_decoder"), [("off", False, False), ("unet", True, False), ("all", True, True)]
)
def test_compile_target_picks_the_modules(target, unet, movq_decoder):
    engine = Engine.create("tiny", "cpu", options=EngineOptions(compile=target))  # compiling waits for a call
    assert is_compiled(engine.unet(UNetKind.TEXT2IMG)) is unet
    assert is_compiled(engine.unet(UNetKind.INPAINT)) is unet  # UNets loaded later get the options too
    assert is_compiled(engine.movq.decoder) is movq_decoder
    assert not is_compiled(engine.movq.encoder)


def test_channels_last_engine_draws_the_eager_pictures(engine22):
    engine = Engine.create("tiny", "cpu", options=EngineOptions(channels_last=True))
    unet_conv = engine.unet(UNetKind.TEXT2IMG).conv_in.weight
    assert unet_conv.is_contiguous(memory_format=torch.channels_last) and not unet_conv.is_contiguous()
    assert engine.movq.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    request = make(num_images=2, seed=4)
    assert max_diff(engine.run(request).pixels, engine22.run(request).pixels) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.timeout(900)
@needs_compiler
def test_compiled_engine_draws_the_eager_pictures_as_rows_leave_the_batch(compiled, engine22):
    # a request canceled after step 2 shrinks the UNet's batch mid-run, a new shape for the compiled graph
    fields = {"steps": 5}
    doomed, survivor = make(seed=1, **fields), make(seed=2, num_images=2, prompt="a lighthouse", **fields)

    def run(engine):
        steps_seen = 0

        def count(event):
            nonlocal steps_seen
            steps_seen += event.stage is Stage.DECODER

        return engine.run_batch([doomed, survivor], count, [lambda: steps_seen >= 2, None])

    graphs_before = counters["stats"]["unique_graphs"]
    mine, eager = run(compiled), run(engine22)
    assert counters["stats"]["unique_graphs"] > graphs_before  # it did run compiled code
    assert mine[0] is None and eager[0] is None
    assert max_diff(mine[1].pixels, eager[1].pixels) <= TOLERANCE
    unet = compiled.unet(UNetKind.TEXT2IMG)  # still the diffusers model, with its config
    assert unet.config.block_out_channels == engine22.unet(UNetKind.TEXT2IMG).config.block_out_channels


@pytest.mark.slow
@pytest.mark.timeout(900)
@needs_compiler
def test_compiled_controlnet_keeps_its_hint_memo(compiled, engine22, depth):
    request = make(task="controlnet", hint=depth, seed=7)
    hint_block = compiled.unet(UNetKind.CONTROLNET).add_embedding.input_hint_block.block
    calls = 0

    def hook(*_):
        nonlocal calls
        calls += 1

    handle = hint_block.register_forward_hook(hook)
    try:
        mine = compiled.run(request)
    finally:
        handle.remove()
    assert calls == 1  # once per run, not once per step
    assert max_diff(mine.pixels, engine22.run(request).pixels) <= TOLERANCE


_DECODE_IN_A_FRESH_PROCESS = """
import json, sys
from pathlib import Path
import torch
from torch._dynamo.utils import counters
from kandinsky_serve.engine.engine import Engine
from kandinsky_serve.engine.sources import UNetKind
from kandinsky_serve.engine.speed import EngineOptions

engine = Engine.create("tiny", "cpu", options=EngineOptions("all", compile_cache_dir=Path(sys.argv[1])))
with torch.inference_mode():
    for side in (8, 12):  # two image sizes
        engine.movq.decode(torch.randn(1, 4, side, side), force_not_quantize=True)
print(json.dumps({**counters["inductor"], "graphs": counters["stats"]["unique_graphs"]}))
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
@needs_compiler
def test_a_restarted_worker_reuses_the_kernels_compiled_into_its_data_dir(tmp_path):
    cache = tmp_path / "data" / "compile-cache"

    def decode_in_a_fresh_process() -> dict[str, int]:
        # only the MoVQ decoder compiles here: the smallest graph that goes through the engine's options
        env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
        done = subprocess.run(
            [sys.executable, "-c", _DECODE_IN_A_FRESH_PROCESS, str(cache)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = decode_in_a_fresh_process()
    # static for the first size, then again with the size symbolic
    assert (first["graphs"], first.get("fxgraph_cache_miss"), first.get("fxgraph_cache_hit", 0)) == (2, 2, 0)
    assert any((cache / "fxgraph").iterdir())
    second = decode_in_a_fresh_process()
    # the same graphs, their kernels read from the cache: nothing compiled again
    assert second.get("fxgraph_cache_hit", 0) >= 1 and second.get("fxgraph_cache_miss", 0) == 0


def test_engine_points_inductor_at_its_cache_folder_only_when_given_one(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "the operator's"))  # restored after the test
    Engine.create("tiny", "cpu", options=EngineOptions(compile="unet"))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "the operator's")
    Engine.create("tiny", "cpu", options=EngineOptions(compile="unet", compile_cache_dir=tmp_path / "cache"))
    assert Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]) == (tmp_path / "cache").resolve()
