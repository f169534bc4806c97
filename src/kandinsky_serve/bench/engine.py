"""Our engine against plain diffusers pipelines, in the same process, on the same components.

Both sides get the very same loaded modules (so the same weights and dtype), prompt, seeds, sizes,
steps, guidance and scheduler. Timings are medians of repeated runs after a warm-up, whose time is
reported too (with --compile it is the compile). With one image the two draw from one generator in
the same order, so their pictures are compared too (max abs diff).

The speed options (--compile, --channels-last, CUDA graphs) apply to our engine only: the diffusers side always
runs plain eager with contiguous weights (torch.compiler's force_eager stance, weights converted
back for its runs), because that is what users compare against. So with options on, the ratio is
ours-with-options against plain diffusers, and not the engine's own merit alone.

On CUDA, each row also reports model-FLOPs utilisation: the image's FLOPs (counted, see bench.flops)
per second, over the GPU's dense half-precision peak; None on a CPU, an unknown GPU, or in fp32.
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from kandinsky_serve.bench.flops import FlopCounter, peak_flops, utilisation
from kandinsky_serve.bench.profile import describe, profile_engine
from kandinsky_serve.domain.events import ProgressEvent
from kandinsky_serve.domain.request import GenerationRequest
from kandinsky_serve.engine.engine import Engine
from kandinsky_serve.engine.sources import UNetKind
from kandinsky_serve.engine.speed import EngineOptions

PROMPT = "a moss covered astronaut with a black background"


@dataclass
class Row:
    size: int
    batch: int
    steps: int
    prior_steps: int
    ours_s_per_image: float
    diffusers_s_per_image: float
    ours_images_per_s: float
    diffusers_images_per_s: float
    ratio: float  # ours / diffusers time; below 1 is faster
    max_abs_diff: float | None  # pixels in [0, 1], batch 1 only
    peak_memory_mb: float
    ours_first_run_s: float  # the warm-up run: with --compile, mostly compiling
    flops_per_image: int
    mfu: float | None  # ours; CUDA in fp16/bf16 on a GPU of known peak only
    diffusers_mfu: float | None
    ours_stages_s: dict[str, float] | None = None  # prior, decoder, decode, total: ours, last timed run
    profile: dict[str, Any] | None = None  # --profile: bench.profile's dispatch (and CUDA kernel) figures


def _diffusers_pipes(engine: Engine) -> tuple[Any, Any]:
    from diffusers import DDPMScheduler, KandinskyV22Pipeline

    prior = engine.prior.parts.diffusers_pipeline(engine.family)
    decoder = KandinskyV22Pipeline(
        unet=engine.unet(UNetKind.TEXT2IMG),
        scheduler=DDPMScheduler.from_config(engine.scheduler_config),
        movq=engine.movq,
    )
    for pipe in (prior, decoder):
        pipe.set_progress_bar_config(disable=True)
    return prior, decoder


def _timed(run: Any, repeats: int, device: torch.device) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated()) / 2**20
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024  # Linux reports KiB


@contextmanager
def _plain(engine: Engine) -> Iterator[None]:
    """The diffusers side's conditions: eager, and contiguous weights if ours are channels_last."""
    modules = [engine.unet(UNetKind.TEXT2IMG), engine.movq] if engine.options.channels_last else []
    for module in modules:
        torch.nn.Module.to(module, memory_format=torch.contiguous_format)
    try:
        with torch.compiler.set_stance("force_eager"):
            yield
    finally:
        # the same parameter objects get their channels_last layout back, so compiled graphs (which
        # guard on parameter strides) stay valid and ours do not recompile
        for module in modules:
            torch.nn.Module.to(module, memory_format=torch.channels_last)


def _peak(engine: Engine) -> float | None:
    if engine.device.type != "cuda" or engine.dtype not in (torch.float16, torch.bfloat16):
        return None
    return peak_flops(torch.cuda.get_device_name(engine.device))


def compare(
    engine: Engine,
    size: int,
    batch: int,
    steps: int,
    prior_steps: int,
    repeats: int,
    seed: int = 42,
    flops: FlopCounter | None = None,
    profile: bool = False,
) -> Row:
    prior_pipe, decoder_pipe = _diffusers_pipes(engine)
    request = GenerationRequest(
        model=engine.spec.id,
        prompt=PROMPT,
        width=size,
        height=size,
        num_images=batch,
        steps=steps,
        prior_steps=prior_steps,
        scheduler="DDPM",
        seed=seed,
    )

    stages: dict[str, float] = {}

    def ours(on_progress: Callable[[ProgressEvent], None] | None = None) -> np.ndarray:
        result = engine.run(request, on_progress)
        stages.update(result.timings)
        return result.pixels

    def theirs(on_step: Callable[[], None] | None = None) -> np.ndarray:
        def callback(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            if on_step is not None:
                on_step()
            return {}

        generator = torch.Generator().manual_seed(seed)
        embeds = prior_pipe(PROMPT, num_images_per_prompt=batch, num_inference_steps=prior_steps, generator=generator)
        images: np.ndarray = decoder_pipe(
            image_embeds=embeds.image_embeds,
            negative_image_embeds=embeds.negative_image_embeds,
            height=size,
            width=size,
            num_inference_steps=steps,
            generator=generator,
            output_type="np",
            callback_on_step_end=callback if on_step is not None else None,
        ).images
        return images

    # each side warms up (allocator, kernels, caches such as our zero embed; compiling) before its runs
    with torch.inference_mode():
        first_s, _ = _timed(ours, 1, engine.device)
        ours_s, our_pixels = _timed(ours, repeats, engine.device)
    with _plain(engine), torch.inference_mode():
        theirs()
        theirs_s, their_pixels = _timed(theirs, repeats, engine.device)
    last_stages = dict(stages)  # the last timed run's, before the profiling runs
    profiled = None
    if profile:

        def plain(on_step: Callable[[], None] | None) -> np.ndarray:
            with _plain(engine):
                return theirs(on_step)

        with torch.inference_mode():
            profiled = profile_engine(ours, plain, batch, engine.device.type == "cuda")
    diff = float(np.abs(our_pixels - their_pixels).max()) if batch == 1 else None
    flops_per_image = (flops or FlopCounter(engine)).per_image(size, steps, prior_steps)
    peak = _peak(engine)
    return Row(
        size=size,
        batch=batch,
        steps=steps,
        prior_steps=prior_steps,
        ours_s_per_image=round(ours_s / batch, 4),
        diffusers_s_per_image=round(theirs_s / batch, 4),
        ours_images_per_s=round(batch / ours_s, 3),
        diffusers_images_per_s=round(batch / theirs_s, 3),
        ratio=round(ours_s / theirs_s, 4),
        max_abs_diff=diff,
        peak_memory_mb=round(_peak_memory_mb(engine.device), 1),
        ours_first_run_s=round(first_s, 3),
        flops_per_image=flops_per_image,
        mfu=utilisation(flops_per_image, ours_s / batch, peak),
        diffusers_mfu=utilisation(flops_per_image, theirs_s / batch, peak),
        ours_stages_s={k: round(v, 4) for k, v in last_stages.items()},
        profile=profiled,
    )


def run(
    model: str,
    device: str,
    sizes: list[int],
    batches: list[int],
    steps: int,
    prior_steps: int,
    repeats: int,
    dtype: str = "auto",
    options: EngineOptions | None = None,
    profile: bool = False,
) -> dict[str, Any]:
    engine = Engine.create(model, device, dtype, options)
    flops = FlopCounter(engine)
    rows = [
        compare(engine, size, batch, steps, prior_steps, repeats, flops=flops, profile=profile)
        for size in sizes
        for batch in batches
    ]
    peak = _peak(engine)
    our_total = sum(r.ours_s_per_image for r in rows)
    their_total = sum(r.diffusers_s_per_image for r in rows)
    return {
        "benchmark": "engine",
        "model": model,
        "device": str(engine.device) if engine.device.type != "cuda" else torch.cuda.get_device_name(),
        "dtype": str(engine.dtype).removeprefix("torch."),
        "compile": engine.options.compile,
        "channels_last": engine.options.channels_last,
        "cuda_graphs": engine.graphs is not None,
        "peak_tflops": None if peak is None else peak / 1e12,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "date": datetime.now(UTC).date().isoformat(),
        "ours_s_per_image": round(our_total / len(rows), 4),
        "diffusers_s_per_image": round(their_total / len(rows), 4),
        "ratio": round(our_total / their_total, 4),
        "rows": [asdict(r) for r in rows],
    }


def table(result: dict[str, Any]) -> str:
    columns = ("size", 6), ("batch", 5), ("steps", 9), ("ours s/img", 11), ("diffusers s/img", 16), ("ratio", 6)
    extra = ("max diff", 9), ("peak MB", 8), ("1st run s", 10), ("TFLOP/img", 10), ("MFU", 6), ("diff MFU", 8)
    head = " ".join(f"{name:>{width}}" for name, width in (*columns, *extra))
    options = f"compile {result['compile']}" + (", channels_last" if result["channels_last"] else "")
    options += ", CUDA graphs" if result.get("cuda_graphs") else ""
    title = (
        f"engine benchmark: {result['model']} on {result['device']} ({result['dtype']}, ours with {options}; "
        f"diffusers eager), torch {result['torch']}"
    )
    lines = [title, head]
    for r in result["rows"]:
        diff = "" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}"
        steps = f"{r['prior_steps']}+{r['steps']}"
        mfu = "" if r["mfu"] is None else f"{r['mfu']:.1%}"
        their_mfu = "" if r["diffusers_mfu"] is None else f"{r['diffusers_mfu']:.1%}"
        lines.append(
            f"{r['size']:>6} {r['batch']:>5} {steps:>9} {r['ours_s_per_image']:>11.3f} "
            f"{r['diffusers_s_per_image']:>16.3f} {r['ratio']:>6.3f} {diff:>9} {r['peak_memory_mb']:>8.0f} "
            f"{r['ours_first_run_s']:>10.2f} {r['flops_per_image'] / 1e12:>10.3g} {mfu:>6} {their_mfu:>8}"
        )
    ours, theirs = result["ours_s_per_image"], result["diffusers_s_per_image"]
    for r in result["rows"]:
        if r.get("profile"):
            lines.append(f"profile {r['size']} batch {r['batch']}: {describe(r['profile'])}")
        if r.get("ours_stages_s"):
            stages = ", ".join(f"{k.removesuffix('_s')} {v:.3f}" for k, v in r["ours_stages_s"].items())
            lines.append(f"stages {r['size']} batch {r['batch']} (ours, s): {stages}")
    lines.append(f"mean: ours {ours:.3f} s/image, diffusers {theirs:.3f} s/image, ratio {result['ratio']:.3f}")
    return "\n".join(lines)


def as_json(result: dict[str, Any]) -> str:
    return json.dumps(result)
