"""`bench engine --profile`: how much the host dispatches per image and per decoder step.

On any device: aten operators dispatched (a TorchDispatchMode counting every call that reaches a
kernel), for one whole run and per decoder step, for ours (the capture-safe prior and decoder steps,
and the old loops that call the diffusers schedulers' step()) and for plain diffusers. A step's
figure is the median count between two consecutive decoder progress callbacks, so it holds the
step and the loop's own work around it (the cancel check; diffusers' callback), nothing of the
prior or the decode.

On CUDA also, from torch.profiler over one run of each side: kernels run per image, launches per
image (the host's calls that start GPU work: kernel launches, graph launches and copies; a replayed
CUDA graph runs hundreds of kernels for one launch), and the GPU busy fraction: the time some kernel
(or copy) runs, intervals merged, over the run's wall time. A launch-bound loop shows as many
launches as kernels and a low busy fraction; a captured one, few launches and a high fraction.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from kandinsky_serve.domain.events import ProgressEvent, Stage
from kandinsky_serve.engine import legacy


class OpCounter(TorchDispatchMode):
    """Counts the aten operators dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += 1
        return func(*args, **(kwargs or {}))


class StepMarks:
    """The counter's value at each decoder step's end; per-step figures are the differences."""

    def __init__(self, counter: OpCounter) -> None:
        self.counter = counter
        self.marks: list[int] = []

    def mark(self) -> None:
        self.marks.append(self.counter.count)

    def on_progress(self, event: ProgressEvent) -> None:
        if event.stage is Stage.DECODER:
            self.mark()

    def per_step(self) -> int | None:
        deltas = [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]
        return int(statistics.median(deltas)) if deltas else None


@contextmanager
def _counting() -> Iterator[StepMarks]:
    counter = OpCounter()
    with counter:
        yield StepMarks(counter)


def count_ops(run: Callable[[StepMarks], Any]) -> tuple[int, int | None]:
    """(ops of the whole run, median ops per decoder step); `run` calls marks at each step's end."""
    with _counting() as marks:
        run(marks)
    return marks.counter.count, marks.per_step()


# the CUDA runtime and driver calls that start work on the GPU, as torch.profiler names them
_LAUNCHES = frozenset(
    {
        "cudaLaunchKernel",
        "cudaLaunchKernelExC",
        "cuLaunchKernel",
        "cuLaunchKernelEx",
        "cudaGraphLaunch",
        "cudaMemcpyAsync",
        "cudaMemsetAsync",
    }
)


def cuda_profile(run: Callable[[], Any], images: int) -> dict[str, Any]:
    """Kernels launched per image and the GPU's busy fraction over one run (CUDA only)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        wall_s = time.perf_counter() - start
    events = prof.events()
    spans = sorted((e.time_range.start, e.time_range.end) for e in events if e.device_type == DeviceType.CUDA)
    launches = sum(1 for e in events if e.device_type == DeviceType.CPU and e.name in _LAUNCHES)
    busy_us, end = 0.0, float("-inf")
    for a, b in spans:  # the union of the intervals: overlapping streams count once
        if b > end:
            busy_us += b - max(a, end)
            end = b
    return {
        "kernels_per_image": round(len(spans) / images),
        "launches_per_image": round(launches / images),
        "kernel_s": round(busy_us / 1e6, 4),
        "wall_s": round(wall_s, 4),
        "gpu_busy": round(min(busy_us / 1e6 / wall_s, 1.0), 4) if wall_s > 0 else None,
    }


def profile_engine(
    ours: Callable[[Callable[[ProgressEvent], None] | None], Any],
    theirs: Callable[[Callable[[], None] | None], Any],
    images: int,
    cuda: bool,
) -> dict[str, Any]:
    """Both sides' dispatch figures. `ours(on_progress)` runs our engine; `theirs(on_step)` runs
    plain diffusers and calls on_step at each decoder step's end."""
    ours_total, ours_step = count_ops(lambda marks: ours(marks.on_progress))
    with legacy.loops():
        legacy_total, legacy_step = count_ops(lambda marks: ours(marks.on_progress))
    theirs_total, theirs_step = count_ops(lambda marks: theirs(marks.mark))
    report: dict[str, Any] = {
        "ops_per_step": ours_step,
        "legacy_ops_per_step": legacy_step,
        "diffusers_ops_per_step": theirs_step,
        "ops_per_image": round(ours_total / images),
        "legacy_ops_per_image": round(legacy_total / images),
        "diffusers_ops_per_image": round(theirs_total / images),
        "cuda": None,
    }
    if cuda:
        report["cuda"] = {
            "ours": cuda_profile(lambda: ours(None), images),
            "diffusers": cuda_profile(lambda: theirs(None), images),
        }
    return report


def describe(profile: dict[str, Any]) -> str:
    line = (
        f"ops/step ours {profile['ops_per_step']} (old loop {profile['legacy_ops_per_step']}), "
        f"diffusers {profile['diffusers_ops_per_step']}; ops/image ours {profile['ops_per_image']} "
        f"(old loop {profile['legacy_ops_per_image']}), diffusers {profile['diffusers_ops_per_image']}"
    )
    cuda = profile["cuda"]
    if cuda:
        ours, theirs = cuda["ours"], cuda["diffusers"]
        line += (
            f"; kernels/image ours {ours['kernels_per_image']}, diffusers {theirs['kernels_per_image']}; "
            f"launches/image ours {ours.get('launches_per_image')}, diffusers {theirs.get('launches_per_image')}; "
            f"GPU busy ours {ours['gpu_busy']:.0%}, diffusers {theirs['gpu_busy']:.0%}"
        )
    return line
