"""Denoising steps replayed as CUDA graphs, one graph per shape bucket.

Eager, a 768² Kandinsky step launches thousands of small kernels, and on an H200 the GPU waits on
the host for most of the run (the profile in ../shared/gpu/README.md: busy 37 % at batch 1). A CUDA
graph records a step's kernels once and replays them with one launch. `StepGraphs` wraps a step
function (engine.steps' decoder step, engine.prior_step's prior step: tensors in, tensors out, no
host sync) so that each call:

- looks up the graph for the step's signature (which UNet, scheduler, CFG...) and the shapes and dtypes
  of its inputs: a bucket is (batch rows, latent size, task), as the inputs make it;
- captures one the first time a bucket is seen (after warm-up runs on a side stream, as capture
  requires), with static input buffers that later calls copy their tensors into; an input that is the
  very tensor of the previous call (a run's conditioning, its guidance) is not copied again, which
  is sound because the loops never write into a tensor they have passed to a step;
- replays it and returns copies of the static outputs, so that a later replay of any graph, which
  reuses the shared memory pool, cannot change what a caller holds.

Chosen over torch.compile's "reduce-overhead" mode: capture costs a few eager forwards (well under
a second per bucket on an H100), where inductor's cold compile of the full UNet ran past 230 s
(../shared/gpu/README.md), and it needs no compiler on the machine. The two compose: with KS_COMPILE
the captured step calls the inductor-compiled UNet (fused GroupNorm + SiLU, fewer kernels to replay),
compiled during the first bucket's warm-up runs.

Graphs pin memory, so at most `limit` are kept (least recently used dropped). A step whose capture
fails runs eagerly from then on, with a warning: a request never fails because it could not be captured.
The capture itself is behind `Capture`, so the bookkeeping (buckets, static buffers, copies, limit,
fallback) is tested on a CPU; `cuda_capture` is the only part that needs a GPU.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

log = logging.getLogger(__name__)

StepFn = Callable[..., Any]
# a nested structure of tuples, lists, dicts (str keys), None and tensors: what steps take and return
Tree = Any


class Step(Protocol):
    """A capture-safe step: a function of tensors whose graph depends only on `signature` and the
    shapes of its inputs."""

    @property
    def signature(self) -> Hashable: ...

    def __call__(self, *args: Any) -> Any: ...


# what the loops pass their step through: a StepGraphs, `unwrapped`, or in tests torch.compile
Wrap = Callable[[Step], StepFn]


def unwrapped(step: Step) -> StepFn:
    return step


class Replay(Protocol):
    def __call__(self) -> None:
        """Runs the captured work again: reads the static inputs, overwrites the static outputs."""


# (step, its arguments built of the static input buffers) -> (the static outputs, replay)
Capture = Callable[[StepFn, tuple[Any, ...]], tuple[Tree, Replay]]


def cuda_capture(warmups: int = 2) -> Capture:
    """Captures on the current CUDA device; every graph shares one memory pool (safe because graphs
    of one engine never run concurrently, and callers get copies of the outputs)."""
    pool: list[Any] = []

    def capture(step: StepFn, args: tuple[Any, ...]) -> tuple[Tree, Replay]:
        if not pool:
            pool.append(torch.cuda.graph_pool_handle())
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # cuBLAS/cuDNN pick and allocate their workspaces outside capture
            for _ in range(warmups):
                step(*args)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: only this thread is checked; another thread of the worker that touches CUDA
        # meanwhile must not abort the capture
        with torch.cuda.graph(graph, pool=pool[0], capture_error_mode="thread_local"):
            out = step(*args)
        return out, graph.replay

    return capture


def flatten(tree: Tree) -> tuple[list[torch.Tensor], Hashable]:
    """The tensors of a step's arguments in order, and the structure around them (with each tensor's
    shape, dtype and device, so that the structure is the bucket)."""
    leaves: list[torch.Tensor] = []

    def walk(node: Tree) -> Hashable:
        if isinstance(node, torch.Tensor):
            leaves.append(node)
            return ("T", tuple(node.shape), node.dtype, node.device, node.is_contiguous(), _channels_last(node))
        if node is None:
            return None
        if isinstance(node, tuple | list):
            return (type(node).__name__, tuple(walk(child) for child in node))
        if isinstance(node, dict):
            return ("dict", tuple((key, walk(node[key])) for key in sorted(node)))
        raise TypeError(f"a captured step takes and returns tensors only, not {type(node).__name__}")

    return leaves, walk(tree)


def unflatten(tree: Tree, leaves: Sequence[torch.Tensor]) -> Tree:
    """`tree` with its tensors replaced, in order, by `leaves`."""
    it = iter(leaves)

    def walk(node: Tree) -> Tree:
        if isinstance(node, torch.Tensor):
            return next(it)
        if node is None:
            return None
        if isinstance(node, tuple | list):
            return type(node)(walk(child) for child in node)
        return {key: walk(node[key]) for key in node}

    return walk(tree)


def _channels_last(tensor: torch.Tensor) -> bool:
    return tensor.dim() == 4 and bool(tensor.is_contiguous(memory_format=torch.channels_last))


def _static_copy(tensor: torch.Tensor) -> torch.Tensor:
    # the same strides as the caller's tensor, so channels_last inputs stay channels_last in the graph
    return torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device=tensor.device).copy_(tensor)


@dataclass
class _Graph:
    inputs: list[torch.Tensor]  # the static input buffers, in flatten order
    last: list[torch.Tensor | None]  # the caller's tensor each buffer last took (not copied again)
    outputs: Tree
    replay: Replay

    def __call__(self, leaves: Sequence[torch.Tensor]) -> Tree:
        for i, (buffer, tensor) in enumerate(zip(self.inputs, leaves, strict=True)):
            if tensor is not self.last[i]:
                buffer.copy_(tensor)
                self.last[i] = tensor
        self.replay()
        outputs, _ = flatten(self.outputs)
        return unflatten(self.outputs, [t.clone() for t in outputs])

    def forget_inputs(self) -> None:
        # the callers' tensors of a finished run are not kept alive by the graph
        self.last = [None] * len(self.inputs)


@dataclass(frozen=True)
class GraphStats:
    captures: int  # graphs captured so far (a bucket dropped by the limit and seen again counts twice)
    replays: int
    eager: int  # calls that ran eagerly because their step's capture had failed
    kept: int  # graphs held now
    buckets: tuple[Hashable, ...]  # the keys of the graphs held, least recently used first


class StepGraphs:
    """Wraps steps so that each call replays the graph of its bucket (see the module docstring)."""

    def __init__(self, capture: Capture, limit: int = 32) -> None:
        self._capture = capture
        self._limit = limit
        self._graphs: OrderedDict[Hashable, _Graph] = OrderedDict()
        self._failed: set[Hashable] = set()
        self._lock = threading.Lock()  # one engine runs one batch at a time; this keeps warm-up honest
        self._captures = self._replays = self._eager = 0

    def __call__(self, step: Step) -> StepFn:
        signature = step.signature

        def replayed(*args: Any) -> Any:
            leaves, structure = flatten(args)
            key = (signature, structure)
            with self._lock:
                if key in self._failed:
                    self._eager += 1
                    return step(*args)
                graph = self._graphs.get(key)
                if graph is None:
                    graph = self._record(key, step, args, leaves, structure)
                    if graph is None:
                        self._eager += 1
                        return step(*args)
                self._graphs.move_to_end(key)
                self._replays += 1
                return graph(leaves)

        return replayed

    def stats(self) -> GraphStats:
        with self._lock:
            return GraphStats(self._captures, self._replays, self._eager, len(self._graphs), tuple(self._graphs))

    def release_inputs(self) -> None:
        """After a run: the graphs stop referring to the run's tensors (their buffers stay)."""
        with self._lock:
            for graph in self._graphs.values():
                graph.forget_inputs()

    def _record(
        self, key: Hashable, step: Step, args: tuple[Any, ...], leaves: list[torch.Tensor], structure: Hashable
    ) -> _Graph | None:
        inputs = [_static_copy(t) for t in leaves]
        try:
            outputs, replay = self._capture(step, unflatten(args, inputs))
        except Exception:  # any failure to capture means: run this step eagerly
            log.warning("could not capture a step for %s; it runs eagerly", _describe(structure), exc_info=True)
            self._failed.add(key)
            return None
        self._captures += 1
        graph = _Graph(inputs, list(leaves), outputs, replay)
        self._graphs[key] = graph
        while len(self._graphs) > self._limit:
            self._graphs.popitem(last=False)
        return graph


def _describe(structure: Hashable) -> str:
    shapes: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, tuple) and node and node[0] == "T":
            shapes.append("x".join(map(str, node[1])) or "scalar")
        elif isinstance(node, tuple):
            for child in node:
                walk(child)

    walk(structure)
    return "inputs " + ", ".join(shapes)
