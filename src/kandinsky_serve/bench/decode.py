"""MoVQ decode of one batch of random latents, whole and in tiles: peak memory, time, and how far apart.

Every decode runs in a fresh process, so its peak resident memory (ru_maxrss; on CUDA the allocator's
peak) is that decode's alone, not the largest of everything measured before it. Both variants decode
the same latents (one seed); their pictures are compared as the 8-bit images a server would send.
Untiled decodes above `whole_up_to` are skipped: on a CPU a full-size MoVQ at 2048² needs far more
memory than a workstation has, which is the point of tiling.
"""

from __future__ import annotations

import multiprocessing
import platform
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from kandinsky_serve.engine import tiling
from kandinsky_serve.engine.devices import resolve_device, resolve_dtype
from kandinsky_serve.engine.registry import resolve_model


def _rss_mb() -> float:
    """Resident memory now (Linux), which ru_maxrss cannot tell once loading has peaked higher."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _decode_once(
    model: str,
    device: str,
    dtype: str,
    size: int,
    batch: int,
    tiled: bool,
    tile: int,
    overlap: int,
    seed: int,
    threads: int | None,
) -> dict[str, Any]:
    """In a fresh process: load the model's MoVQ, decode once, report."""
    if threads is not None:
        torch.set_num_threads(threads)
    torch_device = resolve_device(device)
    torch.manual_seed(seed)  # random-weight models draw their weights: both variants must get the same ones
    movq = resolve_model(model).make_source().load_movq(torch_device, resolve_dtype(dtype, torch_device))
    scale = 2 ** (len(movq.config.block_out_channels) - 1)
    side = size // scale
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, movq.config.latent_channels, side, side, generator=generator)
    latents = latents.to(torch_device, movq.dtype)
    base_mb = _rss_mb()
    if torch_device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.inference_mode():
        if tiled:
            decoded = tiling.decode_tiled(movq, latents, tile, overlap)
        else:
            decoded = tiling.decode_whole(movq, latents)
    if torch_device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak_mb = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024  # Linux reports KiB
    cuda_peak_mb = float(torch.cuda.max_memory_allocated()) / 2**20 if torch_device.type == "cuda" else None
    pixels = ((decoded.float() * 0.5 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return {
        "size": size,
        "batch": batch,
        "mode": "tiled" if tiled else "whole",
        "tiles": len(tiling.spans(side, tile, overlap)) ** 2 if tiled else 1,
        "seconds": round(seconds, 3),
        "base_rss_mb": round(base_mb, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "cuda_peak_mb": None if cuda_peak_mb is None else round(cuda_peak_mb, 1),
        "dtype": str(movq.dtype).removeprefix("torch."),
        "pixels": pixels,
    }


def _in_fresh_process(**kwargs: Any) -> dict[str, Any]:
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        result: dict[str, Any] = pool.submit(_decode_once, **kwargs).result()
    return result


def run(
    model: str = "tiny",
    device: str = "cpu",
    dtype: str = "auto",
    sizes: tuple[int, ...] = (1024, 2048),
    batch: int = 1,
    tile: int = tiling.DEFAULT_TILING.tile,
    overlap: int = tiling.DEFAULT_TILING.overlap,
    whole_up_to: int | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """For each square size, a tiled decode and (up to `whole_up_to`, all when None) a whole one.
    `threads` pins torch's CPU threads: on a CPU shared with other work, one thread per decode gives
    steadier timings than threads that wait on each other at every operator."""
    tiling.DecodeTiling(tile=tile, overlap=overlap)  # refuses a bad tiling before any process starts
    rows: list[dict[str, Any]] = []
    for size in sizes:
        common = {"model": model, "device": device, "dtype": dtype, "size": size, "batch": batch, "seed": seed}
        common["threads"] = threads
        tiled = _in_fresh_process(**common, tiled=True, tile=tile, overlap=overlap)
        whole = None
        if whole_up_to is None or size <= whole_up_to:
            whole = _in_fresh_process(**common, tiled=False, tile=tile, overlap=overlap)
        for row in (whole, tiled):
            if row is None:
                continue
            row["mean_abs_diff"] = row["max_abs_diff"] = None
            if whole is not None and row is tiled:
                difference = np.abs(tiled["pixels"].astype(np.int16) - whole["pixels"]) / 255
                row["mean_abs_diff"] = round(float(difference.mean()), 5)
                row["max_abs_diff"] = round(float(difference.max()), 4)
        for row in (whole, tiled):
            if row is not None:
                del row["pixels"]
                rows.append(row)
    torch_device = resolve_device(device)
    return {
        "benchmark": "decode",
        "model": model,
        "device": str(torch_device) if torch_device.type != "cuda" else torch.cuda.get_device_name(),
        "dtype": rows[0]["dtype"],
        "torch": torch.__version__,
        "threads": threads or torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "date": datetime.now(UTC).date().isoformat(),
        "tile": tile,
        "overlap": overlap,
        "rows": rows,
    }


def table(result: dict[str, Any]) -> str:
    title = (
        f"decode benchmark: {result['model']} MoVQ on {result['device']} ({result['dtype']}), torch "
        f"{result['torch']}, {result['threads']} threads; tiles of at most {result['tile']} latents, "
        f"overlap {result['overlap']}"
    )
    head = (
        f"{'size':>6} {'batch':>5} {'mode':>6} {'tiles':>5} {'seconds':>8} {'base MB':>8} {'peak MB':>8} "
        f"{'decode MB':>9} {'mean diff':>9} {'max diff':>8}"
    )
    lines = [title, head]
    for r in result["rows"]:
        peak = r["cuda_peak_mb"] if r["cuda_peak_mb"] is not None else r["peak_rss_mb"]
        added = peak if r["cuda_peak_mb"] is not None else peak - r["base_rss_mb"]
        mean = "" if r["mean_abs_diff"] is None else f"{r['mean_abs_diff']:.4f}"
        most = "" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.3f}"
        lines.append(
            f"{r['size']:>6} {r['batch']:>5} {r['mode']:>6} {r['tiles']:>5} {r['seconds']:>8.2f} "
            f"{r['base_rss_mb']:>8.0f} {peak:>8.0f} {added:>9.0f} {mean:>9} {most:>8}"
        )
    lines.append("decode MB: peak resident memory less the memory before decoding (on CUDA, the allocator's peak)")
    return "\n".join(lines)
