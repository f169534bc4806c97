"""Engine: a loaded Kandinsky model that turns a batch of compatible requests into images.

prior (all prompts of the batch at once) -> decoder loop -> MoVQ decode -> exact output sizes.
The stages of one run live in `engine.run`; this module loads and keeps the components.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from kandinsky_serve.domain.errors import Canceled, ErrorCode, ServeError
from kandinsky_serve.domain.request import GenerationRequest
from kandinsky_serve.engine.conditioning import memoize_hint
from kandinsky_serve.engine.devices import resolve_device, resolve_dtype
from kandinsky_serve.engine.graphs import StepGraphs, Wrap, cuda_capture, unwrapped
from kandinsky_serve.engine.preview import Previewer
from kandinsky_serve.engine.prior import PriorRunner
from kandinsky_serve.engine.registry import ModelSpec, resolve_model
from kandinsky_serve.engine.result import GenerationResult
from kandinsky_serve.engine.run import CancelCheck, ProgressCallback, Run
from kandinsky_serve.engine.sources import DecoderTextParts, Family, UNetKind
from kandinsky_serve.engine.speed import EngineOptions
from kandinsky_serve.engine.tiling import DEFAULT_TILING, DecodeTiling, is_out_of_memory

__all__ = ["CancelCheck", "Engine", "GenerationResult", "ProgressCallback"]


class Engine:
    def __init__(
        self, spec: ModelSpec, device: torch.device, dtype: torch.dtype, options: EngineOptions | None = None
    ) -> None:
        self.spec = spec
        self.family = spec.family
        self.device = device
        self.dtype = dtype
        self.options = (options or EngineOptions()).for_device(device)
        self.options.apply_process_wide()
        self._source = spec.make_source()
        self._unets: dict[UNetKind, Any] = {}
        self._decoder_text: DecoderTextParts | None = None
        self.prior = PriorRunner(self._source.load_prior(device, dtype), device, dtype)
        self.movq = self.options.prepare_movq(self._source.load_movq(device, dtype))
        self._unets[UNetKind.TEXT2IMG] = self.options.prepare_unet(
            self._source.load_unet(UNetKind.TEXT2IMG, device, dtype)
        )
        if self.family is Family.K21:
            self._decoder_text = self._source.load_decoder_text(device, dtype)
        self.scheduler_config = self._source.decoder_scheduler_config()
        movq_scale = 2 ** (len(self.movq.config.block_out_channels) - 1)
        unet_scale = 2 ** (len(self._unets[UNetKind.TEXT2IMG].config.block_out_channels) - 1)
        self.movq_scale = movq_scale
        self.size_multiple = movq_scale * unet_scale
        self.previewer = Previewer(self.movq, movq_scale)
        self.decode_tiling: DecodeTiling = DEFAULT_TILING  # when and how the MoVQ decodes in tiles
        # what the prior and decoder loops pass their capture-safe steps through
        self.graphs: StepGraphs | None = None
        self.step_wrap: Wrap = unwrapped
        if self.options.cuda_graphs and device.type == "cuda":
            self.use_graphs(StepGraphs(cuda_capture()))

    def use_graphs(self, graphs: StepGraphs | None) -> None:
        """Replays both loops' steps through `graphs` (None: eager)."""
        self.graphs = graphs
        self.step_wrap = graphs if graphs is not None else unwrapped
        self.prior.wrap = graphs if graphs is not None else unwrapped

    @classmethod
    def create(
        cls, model: str, device: str = "auto", dtype: str = "auto", options: EngineOptions | None = None
    ) -> Engine:
        torch_device = resolve_device(device)
        return cls(resolve_model(model), torch_device, resolve_dtype(dtype, torch_device), options)

    def unet(self, kind: UNetKind) -> Any:
        if kind not in self._unets:
            unet = self._source.load_unet(kind, self.device, self.dtype)
            # the hint memo goes in first, so compiling sees (and leaves eager) the memo, not the bare block
            self._unets[kind] = self.options.prepare_unet(memoize_hint(unet) if kind is UNetKind.CONTROLNET else unet)
        return self._unets[kind]

    def run(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> GenerationResult:
        result = self.run_batch([request], on_progress, [cancel] if cancel else None)[0]
        if result is None:
            raise Canceled()
        return result

    def run_batch(
        self,
        requests: Sequence[GenerationRequest],
        on_progress: ProgressCallback | None = None,
        cancels: Sequence[CancelCheck | None] | None = None,
        previews: int = 0,
    ) -> list[GenerationResult | None]:
        """Results in request order; None for a request canceled while the others went on. With
        previews, progress events carry that many previews, spread over the decoder steps."""
        prepared = [self._prepare(r) for r in requests]
        if len({r.batch_key for r in prepared}) > 1:
            raise ValueError("run_batch needs requests with equal batch_key")
        try:
            with torch.inference_mode(), self._out_of_memory_guard(prepared):
                return Run(self, prepared, on_progress, cancels, previews).execute()
        finally:
            if self.graphs is not None:
                self.graphs.release_inputs()  # the graphs keep their buffers, not this run's tensors

    def _prepare(self, request: GenerationRequest) -> GenerationRequest:
        self.spec.check(request)
        if request.seed is None:
            request = request.model_copy(update={"seed": random.randrange(2**32)})  # noqa: S311
        return request

    @contextmanager
    def _out_of_memory_guard(self, requests: Sequence[GenerationRequest]) -> Iterator[None]:
        try:
            yield
        except RuntimeError as exc:  # torch.OutOfMemoryError is one
            if not is_out_of_memory(exc):
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            first = requests[0]
            images = sum(r.num_images for r in requests)
            raise ServeError(
                ErrorCode.OUT_OF_MEMORY,
                f"The {self.device.type} ran out of memory generating {images} image(s) at "
                f"{first.width}x{first.height}; try fewer images or a smaller size.",
            ) from None

    def decoder_text_parts(self) -> DecoderTextParts:
        if self._decoder_text is None:
            raise RuntimeError("only Kandinsky 2.1 has a decoder text encoder")
        return self._decoder_text
