"""Engine speed options: torch.compile and channels_last (reference: serving-performance.md §2.1).

Both change how the same weights run, not what they compute: the pictures match eager within float
rounding. They are meant for GPUs, where compile + channels_last is the main published lever, and
default off (CPU figures in benchmarks/README.md): on a CPU, compiling pays in steady state but costs
a minute or two per new batch or image size the first time, and channels_last there runs GroupNorm
through a kernel that is far less precise (visible in the pictures at 1024x1024).

Modules are compiled in place (`nn.Module.compile`), so they keep their type, `.config`, submodules
and hooks, and every caller (run.py's loop, `movq.decode`, the diffusers pipelines of the bench)
goes through the compiled code without knowing. Shapes are left to dynamo's automatic dynamic
shapes: the first batch size and image size compile static, the first change recompiles once with
those dimensions symbolic. A restarted worker goes through the same compiles, but reads each graph's
kernels from the cache folder: seconds instead of a minute or two each on a CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from kandinsky_serve.engine.conditioning import HintMemo

if TYPE_CHECKING:
    from kandinsky_serve.settings import Settings

CompileTarget = Literal["off", "unet", "all"]

COMPILE_CACHE_FOLDER = "compile-cache"


@dataclass(frozen=True)
class EngineOptions:
    compile: CompileTarget = "off"  # unet: every decoder UNet; all: also the MoVQ decoder
    channels_last: bool | None = None  # None: on a GPU only (see for_device)
    # inductor's persistent cache (FX graphs, AOT autograd, Triton kernels); None: torch's default,
    # a folder under /tmp that does not survive a reboot or a fresh container
    compile_cache_dir: Path | None = None
    cuda_graphs: bool = True  # on a CUDA device, replay denoising steps as graphs (engine.graphs)

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineOptions:
        return cls(
            settings.compile, settings.channels_last, settings.data_dir / COMPILE_CACHE_FOLDER, settings.cuda_graphs
        )

    def for_device(self, device: torch.device) -> EngineOptions:
        """The options with their defaults settled for the device: channels_last when compiling on a
        GPU. Eager, cuDNN converts every convolution's input and output between NCHW and NHWC (a fifth
        of an H200's kernel time at 768², ../shared/gpu/README.md), but channels_last alone only moves
        the conversions into eager GroupNorm, whose kernel wants NCHW: on the H200 it was 5 % faster at
        batch 1 and 10 % slower at batch 8. Inductor's GroupNorm runs NHWC as it is, so with compile
        the whole UNet stays NHWC. Off on a CPU, whose channels_last GroupNorm is far less precise."""
        if self.channels_last is not None:
            return self
        return replace(self, channels_last=device.type == "cuda" and self.compile != "off")

    def apply_process_wide(self) -> None:
        """Points inductor at the cache folder; before the first compile, as torch reads it lazily."""
        if self.compile == "off" or self.compile_cache_dir is None:
            return
        self.compile_cache_dir.mkdir(parents=True, exist_ok=True)
        # The environment, not torch._inductor.config: the cache folder has no config entry, and a
        # worker process runs one engine, so the process-wide setting is the engine's.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(self.compile_cache_dir.resolve())

    def prepare_unet(self, unet: Any) -> Any:
        _to_channels_last(unet, self.channels_last)
        if self.compile != "off":
            _compile_hint_memo_eagerly(unet)
            unet.compile()
        return unet

    def prepare_movq(self, movq: Any) -> Any:
        _to_channels_last(movq, self.channels_last)
        if self.compile == "all":
            # only the decoder: callers use movq.decode (a method, which compiling the module's forward
            # would miss), and the encoder runs once per img2img/inpaint request, not per image
            movq.decoder.compile()
        return movq


def _to_channels_last(module: torch.nn.Module, wanted: bool | None) -> None:
    if wanted:
        # nn.Module.to, not the diffusers override, which warns about dtype casts on every call
        torch.nn.Module.to(module, memory_format=torch.channels_last)


def _compile_hint_memo_eagerly(unet: Any) -> None:
    """The ControlNet hint memo decides by tensor identity (a weakref) whether to rerun its block;
    traced, that test would be frozen into the graph or guarded on every step, so it stays eager
    (one graph break per forward) and the memo keeps working."""
    for module in unet.modules():
        if isinstance(module, HintMemo):
            module.forward = torch.compiler.disable(module.forward)  # type: ignore[method-assign]
