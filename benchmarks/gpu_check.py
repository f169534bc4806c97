"""Correctness of the captured (and compiled) steps against eager, on the GPU that runs them (issue 12).

1. Full size (random-2.2, fp16): the first prior step and the first decoder step of a real run are
   recorded, then run eagerly, replayed as CUDA graphs (engine.graphs) and, with --compile, through
   inductor; each output against eager as a relative L2 error (goal: below 1e-2, fp16 rounding).
   Whole pictures from random full-size weights prove nothing (50 steps amplify rounding into other
   pictures), so one step is compared.
2. The tiny model in fp32 on the same GPU: the pictures of eager, graph-replayed and the old
   diffusers-step loops, as the largest pixel difference.

One JSON object a line on stdout; exits 1 if a figure misses its goal. Usage:
    python benchmarks/gpu_check.py [--size 768] [--batch 2] [--compile]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
import torch

from kandinsky_serve.domain import GenerationRequest
from kandinsky_serve.engine import legacy
from kandinsky_serve.engine.engine import Engine
from kandinsky_serve.engine.graphs import StepGraphs, cuda_capture, flatten, unflatten
from kandinsky_serve.engine.speed import EngineOptions

GOAL = 1e-2


def relative_l2(a: Any, b: Any) -> float:
    x = torch.cat([t.float().flatten() for t in flatten(a)[0]])
    y = torch.cat([t.float().flatten() for t in flatten(b)[0]])
    return float((x - y).norm() / y.norm().clamp_min(1e-12))


def first_steps(engine: Engine, request: GenerationRequest) -> dict[str, tuple[Any, tuple[Any, ...]]]:
    """The prior's and the decoder's first step of a run, with their arguments (cloned)."""
    seen: dict[str, tuple[Any, tuple[Any, ...]]] = {}

    def recorder(step: Any) -> Any:
        def call(*args: Any) -> Any:
            kind = step.signature[0]
            if kind not in seen:
                leaves, _ = flatten(args)
                seen[kind] = (step, unflatten(args, [t.clone() for t in leaves]))
            return step(*args)

        return call

    engine.use_graphs(None)
    engine.step_wrap = recorder
    engine.prior.wrap = recorder
    engine.run(request)
    engine.use_graphs(None)
    return seen


def full_size(size: int, batch: int, compile_: bool) -> list[dict[str, Any]]:
    options = EngineOptions(compile="unet" if compile_ else "off", cuda_graphs=False)
    engine = Engine.create("random-2.2", "cuda", "fp16", options)
    request = GenerationRequest(
        prompt="a moss covered astronaut", width=size, height=size, num_images=batch, steps=2, prior_steps=2, seed=1
    )
    rows = []
    with torch.inference_mode():
        recorded = first_steps(engine, request)
        for kind, (step, args) in recorded.items():
            with torch.compiler.set_stance("force_eager"):
                eager = step(*args)
            graphs = StepGraphs(cuda_capture())
            start = time.perf_counter()
            replayed = graphs(step)(*args)  # capture, then the first replay
            torch.cuda.synchronize()
            capture_s = time.perf_counter() - start
            row = {
                "check": f"{kind} step, captured vs eager",
                "size": size,
                "batch": batch,
                "relative_l2": relative_l2(replayed, eager),
                "capture_s": round(capture_s, 3),
            }
            if compile_:
                row["compiled_relative_l2"] = relative_l2(step(*args), eager)  # the compiled UNet, no graph
            rows.append(row)
    return rows


def tiny_pictures() -> dict[str, Any]:
    engine = Engine.create("tiny", "cuda", "fp32", EngineOptions(cuda_graphs=False))
    jobs = [
        GenerationRequest(prompt="a red bicycle", width=128, height=128, num_images=2, steps=6, seed=3),
        GenerationRequest(prompt="a red bicycle", width=128, height=128, steps=6, seed=3, scheduler="DPM++ 2M"),
        GenerationRequest(prompt="a red bicycle", width=128, height=128, steps=6, seed=3, scheduler="UniPC"),
    ]
    with torch.inference_mode():
        eager = [engine.run(j).pixels for j in jobs]
        with legacy.loops():
            old_loops = [engine.run(j).pixels for j in jobs]
        engine.use_graphs(StepGraphs(cuda_capture()))
        replayed = [engine.run(j).pixels for j in jobs]
        engine.use_graphs(None)

    def worst(a: list[np.ndarray], b: list[np.ndarray]) -> float:
        return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))

    return {
        "check": "tiny fp32 pictures",
        "graphs_vs_eager_max_abs": worst(replayed, eager),
        "eager_vs_old_loop_max_abs": worst(eager, old_loops),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    ok = True
    for row in full_size(args.size, args.batch, args.compile):
        row["ok"] = row["relative_l2"] < GOAL and row.get("compiled_relative_l2", 0.0) < GOAL
        ok &= row["ok"]
        print(json.dumps(row), flush=True)
    tiny = tiny_pictures()
    tiny["ok"] = tiny["graphs_vs_eager_max_abs"] < 1e-3 and tiny["eager_vs_old_loop_max_abs"] < 1e-3
    ok &= tiny["ok"]
    print(json.dumps(tiny), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
