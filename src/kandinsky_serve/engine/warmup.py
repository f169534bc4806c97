"""Warm-up: a worker runs its shape buckets once before it says it is ready.

The first run of a bucket (image size x images in the batch) captures its CUDA graphs (engine.graphs)
and, with KS_COMPILE, compiles; afterwards the bucket only replays. Warming the buckets users will
hit before reporting ready means no user's request pays for that, and a load balancer that reads
`/readyz` keeps traffic away meanwhile. A bucket not warmed still runs correctly: its first request
captures it (a fraction of a second on a GPU) or, with KS_COMPILE, compiles it.

KS_WARMUP is `auto`, `off`, or buckets: `768x768:1,8 512x512:1` (a size, then the batch sizes; a
bare `768` is square). `auto` warms what makes a difference: on a GPU, the default 512x512 and 768x768
at one image and at KS_MAX_BATCH images; on a CPU, nothing unless KS_COMPILE is on (then 512x512 at
one image), since eager CPU runs have nothing to prepare.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kandinsky_serve.domain.errors import invalid
from kandinsky_serve.domain.request import MAX_SIDE, MIN_SIDE, GenerationRequest

if TYPE_CHECKING:
    from kandinsky_serve.engine.engine import Engine
    from kandinsky_serve.settings import Settings

_STEPS = 2  # every step of a bucket is the same graph; two show the capture is replayed


@dataclass(frozen=True)
class Bucket:
    width: int
    height: int
    batch: int  # images in one run

    def __str__(self) -> str:
        return f"{self.width}x{self.height} x{self.batch}"


_ENTRY = re.compile(r"^(\d+)(?:x(\d+))?:(\d+(?:,\d+)*)$")


def parse(text: str, *, max_batch: int, gpu: bool, compiling: bool) -> list[Bucket]:
    """The buckets KS_WARMUP names (see the module docstring); a ServeError names `warmup` if malformed."""
    text = text.strip().lower()
    if text == "off" or not text:
        return []
    if text == "auto":
        if gpu:
            return [Bucket(side, side, b) for side in (512, 768) for b in dict.fromkeys((1, max_batch))]
        return [Bucket(512, 512, 1)] if compiling else []
    buckets: list[Bucket] = []
    for entry in re.split(r"[\s;]+", text):
        match = _ENTRY.match(entry)
        if match is None:
            raise invalid("warmup", f"{entry!r} is not SIZE:BATCHES, e.g. 768x768:1,8 or 512:1")
        width = int(match[1])
        height = int(match[2] or match[1])
        if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
            raise invalid("warmup", f"{entry!r}: sides go from {MIN_SIDE} to {MAX_SIDE}")
        for batch in match[3].split(","):
            if not 1 <= int(batch) <= max_batch * 16:
                raise invalid("warmup", f"{entry!r}: a batch of {batch} images cannot happen here")
            buckets.append(Bucket(width, height, int(batch)))
    return list(dict.fromkeys(buckets))


def plan(settings: Settings, engine: Engine) -> list[Bucket]:
    """The buckets KS_WARMUP names for this engine (its device, the server's batch and compile)."""
    return parse(
        settings.warmup,
        max_batch=settings.max_batch,
        gpu=engine.device.type == "cuda",
        compiling=settings.compile != "off",
    )


def warm_up(engine: Engine, buckets: list[Bucket]) -> float:
    """Runs each bucket once, as `batch` one-image requests of the model's defaults (its default
    scheduler, CFG on: what most requests are). Returns the seconds it took."""
    start = time.perf_counter()
    for index, bucket in enumerate(buckets):
        request = GenerationRequest.parse(
            {
                "prompt": "warm-up",
                "width": bucket.width,
                "height": bucket.height,
                "steps": _STEPS,
                "prior_steps": _STEPS,
                "seed": index,
            }
        )
        engine.run_batch([request] * bucket.batch)
    return time.perf_counter() - start
