"""One execution of Engine.run_batch: the stages, and the bookkeeping of rows and cancellation.

Every random draw of image i comes from its own generator, in a fixed order (prior noise, prior
steps, decoder noise, decoder steps), so what shares its batch never changes an image's noise or
conditioning. It does change the arithmetic a little: CPU and GPU kernels pick their blocking, and so
their summation order, by the batch's shape, which moves the pixels by float rounding. Running rows
one by one would remove that and with it the batch's throughput; the guarantee users get instead is
stated in docs/deployment.md ("Batching and reproducibility") and held by tests/engine/batching.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from kandinsky_serve.domain.errors import Canceled
from kandinsky_serve.domain.events import ProgressEvent, Stage
from kandinsky_serve.domain.request import GenerationRequest, Task
from kandinsky_serve.engine import schedulers, tiling
from kandinsky_serve.engine.conditioning import decoder_conditioning
from kandinsky_serve.engine.decoder import DenoiseJob, Inpainting, denoise
from kandinsky_serve.engine.graphs import Wrap
from kandinsky_serve.engine.images import (
    generation_size,
    hint_to_tensor,
    image_to_tensor,
    mask_to_keep,
    to_requested_size,
)
from kandinsky_serve.engine.preview import Previewer
from kandinsky_serve.engine.prior import PriorRow, PriorRunner
from kandinsky_serve.engine.result import GenerationResult
from kandinsky_serve.engine.sources import DecoderTextParts, Family, UNetKind
from kandinsky_serve.engine.tiling import DecodeTiling
from kandinsky_serve.imaging import decode_image


class Loaded(Protocol):
    """What a run reads of the loaded model: engine.Engine, which makes the runs (a protocol here, so
    that this module and the engine do not import each other)."""

    device: torch.device
    dtype: torch.dtype
    family: Family
    movq: Any
    movq_scale: int
    size_multiple: int
    scheduler_config: dict[str, Any]
    prior: PriorRunner
    previewer: Previewer
    decode_tiling: DecodeTiling
    step_wrap: Wrap

    def unet(self, kind: UNetKind) -> Any: ...

    def decoder_text_parts(self) -> DecoderTextParts: ...


ProgressCallback = Callable[[ProgressEvent], None]
CancelCheck = Callable[[], bool]

_UNET_FOR_TASK = {Task.INPAINT: UNetKind.INPAINT, Task.CONTROLNET: UNetKind.CONTROLNET}
_INPUT_FRAMED = {Task.IMG2IMG, Task.INPAINT, Task.CONTROLNET}


@dataclass(frozen=True)
class _Row:
    """One image of one request."""

    request: int
    seed: int
    generator: torch.Generator


class Run:
    """One execution of run_batch: the stages, and the bookkeeping of rows and cancellation."""

    def __init__(
        self,
        engine: Loaded,
        requests: list[GenerationRequest],
        on_progress: ProgressCallback | None,
        cancels: Sequence[CancelCheck | None] | None,
        previews: int = 0,
    ) -> None:
        self.engine = engine
        self.previews = previews  # how many previews a run sends, spread over the decoder steps
        self.requests = requests
        self.first = requests[0]
        self.on_progress = on_progress
        self.cancels = list(cancels) if cancels is not None else [None] * len(requests)
        self.rows = [
            _Row(index, seed, torch.Generator().manual_seed(seed))
            for index, request in enumerate(requests)
            for seed in request.seeds()
        ]
        self.alive = torch.ones(len(self.rows), dtype=torch.bool)  # rows not canceled so far
        self.timings: dict[str, float] = {}
        self.size = generation_size(self.first.width, self.first.height, engine.size_multiple)

    def execute(self) -> list[GenerationResult | None]:
        start = time.perf_counter()
        embeds, negatives = self._timed("prior_s", self._embeddings)
        if self.first.task is Task.PRIOR:
            return self._results(start, embeds=(embeds, negatives))
        latents, rows = self._timed("decoder_s", lambda: self._denoise(embeds, negatives))
        pixels = self._timed("decode_s", lambda: self._decode(latents))
        return self._results(start, pixels=dict(zip(rows.tolist(), pixels, strict=True)))

    def _timed(self, name: str, stage: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = stage()
        if self.engine.device.type == "cuda":
            torch.cuda.synchronize(self.engine.device)
        self.timings[name] = time.perf_counter() - start
        return value

    # --- cancellation and progress -------------------------------------------------------

    def _poll(self, stage: Stage, step: int, total: int, previews: tuple[tuple[int, bytes], ...] = ()) -> torch.Tensor:
        """Reports progress; returns which rows are still wanted, raising if none is."""
        if self.on_progress is not None:
            self.on_progress(ProgressEvent(stage, step, total, previews))
        canceled = {i for i, check in enumerate(self.cancels) if check is not None and check()}
        if canceled:
            wanted = torch.tensor([row.request not in canceled for row in self.rows])
            self.alive &= wanted
        if not bool(self.alive.any()):
            raise Canceled()
        return self.alive

    def _prior_step(self, step: int, total: int) -> None:
        # a request canceled during the prior is dropped before the decoder; the prior is short
        self._poll(Stage.PRIOR, step, total)

    # --- stages ----------------------------------------------------------------------------

    def _embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(image embeds, negative image embeds), one row per image."""
        prior = self.engine.prior
        prior_rows: list[PriorRow] = []
        positives: list[list[tuple[int, float]]] = []  # per image: (prior row, weight) to mix
        negative_rows: list[int | None] = []
        for row in self.rows:
            request = self.requests[row.request]
            negative = request.negative_prompt or ""
            mix: list[tuple[int, float]] = []
            texts = (
                [(item.prompt, item.weight) for item in request.fuse if item.prompt is not None]
                if request.task is Task.FUSE
                else [(request.prompt, 1.0)]
            )
            for text, weight in texts:
                mix.append((len(prior_rows), weight))
                prior_rows.append(PriorRow(text, negative, row.generator))
            positives.append(mix)
            if request.negative_prompt:
                negative_rows.append(len(prior_rows))
                prior_rows.append(PriorRow(negative, negative, row.generator))
            else:
                negative_rows.append(None)

        sampled = prior.sample(
            prior_rows,
            self.first.prior_steps,
            self.first.prior_guidance_scale,
            on_step=self._prior_step,
        )
        image_mix = self._fuse_image_embeds()
        zero = prior.zero_embed()
        embeds = torch.stack(
            [
                sum((sampled[i] * w for i, w in mix), torch.zeros_like(zero[0])) + image_mix[row.request]
                for mix, row in zip(positives, self.rows, strict=True)
            ]
        )
        negatives = torch.stack([zero[0] if n is None else sampled[n] for n in negative_rows])
        return embeds, negatives

    def _fuse_image_embeds(self) -> list[torch.Tensor | float]:
        """Per request, the weighted sum of its fuse images' embeddings (0 when it has none)."""
        mixes: list[torch.Tensor | float] = []
        for request in self.requests:
            items = [item for item in request.fuse if item.image is not None]
            if not items:
                mixes.append(0.0)
                continue
            pictures = [decode_image(item.image) for item in items if item.image is not None]
            embedded = self.engine.prior.embed_images(pictures)
            weights = torch.tensor([item.weight for item in items], device=embedded.device, dtype=embedded.dtype)
            mixes.append((embedded * weights[:, None]).sum(0))
        return mixes

    def _denoise(self, embeds: torch.Tensor, negatives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        engine, first = self.engine, self.first
        width, height = self.size
        latent_hw = (height // engine.movq_scale, width // engine.movq_scale)
        device, dtype = engine.device, engine.dtype
        scheduler = schedulers.SchedulerAdapter(
            schedulers.resolve(engine.family, first.scheduler), engine.scheduler_config
        )
        strength = first.strength if first.task is Task.IMG2IMG else 1.0
        timesteps = scheduler.timesteps(first.steps, strength, device)

        noise = torch.cat([torch.randn(1, 4, *latent_hw, generator=row.generator) for row in self.rows])
        noise = noise.to(device, dtype)
        inpainting = None
        image_latents = self._encode_inputs() if first.task in (Task.IMG2IMG, Task.INPAINT) else noise
        if first.task is Task.IMG2IMG:
            if engine.family is Family.K21 and scheduler.spec.variance_preserving:
                latents = _k21_img2img_noise(image_latents, noise, strength)
            else:
                latents = scheduler.add_noise(image_latents, noise, timesteps[0])
        else:
            latents = noise * scheduler.init_noise_sigma
        if first.task is Task.INPAINT:
            keeps = [mask_to_keep(decode_image(r.mask or b"", "L"), width, height, latent_hw) for r in self.requests]
            inpainting = Inpainting(image_latents, self._per_row(torch.cat(keeps).to(device, dtype)), noise)

        hints = None
        if first.task is Task.CONTROLNET:
            tensors = [hint_to_tensor(decode_image(r.hint or b""), width, height) for r in self.requests]
            hints = self._per_row(torch.cat(tensors).to(device, dtype))
        text = engine.decoder_text_parts() if engine.family is Family.K21 else None
        conditioning = decoder_conditioning(text, engine.dtype, self.requests, self.rows, embeds, negatives, hints)

        keep = self.alive.clone()
        job = DenoiseJob(
            latents=latents,
            conditioning=conditioning,
            generators=[row.generator for row in self.rows],
            timesteps=timesteps,
            guidance_scale=first.guidance_scale,
            inpainting=inpainting,
        )
        if not bool(keep.all()):  # rows canceled during the prior never reach the decoder
            job = job.select(keep.to(device))
        alive_at_start = torch.nonzero(keep).flatten()
        wanted_now = alive_at_start

        def check(step: int, total: int, latents: torch.Tensor) -> torch.Tensor | None:
            nonlocal wanted_now
            alive = self._poll(Stage.DECODER, step, total, self._previews(step, total, latents, wanted_now))
            keep_rows = alive[wanted_now]
            wanted_now = wanted_now[keep_rows]
            return keep_rows

        unet = engine.unet(_UNET_FOR_TASK.get(first.task, UNetKind.TEXT2IMG))
        result = denoise(unet, scheduler, job, check, self.engine.step_wrap)
        return result.latents, alive_at_start[result.rows]

    def _previews(
        self, step: int, total: int, latents: torch.Tensor, rows: torch.Tensor
    ) -> tuple[tuple[int, bytes], ...]:
        """Now and then, a preview of each request's first image still in the batch."""
        every = max(1, total // self.previews) if self.previews else 0
        if not every or step % every or step == total:
            return ()
        first: dict[int, int] = {}
        for position, row in enumerate(rows.tolist()):
            first.setdefault(self.rows[row].request, position)
        pictures = self.engine.previewer.render(latents[list(first.values())])
        return tuple(zip(first, pictures, strict=True))

    def _encode_inputs(self) -> torch.Tensor:
        """The MoVQ latents of each row's init image (img2img, inpaint)."""
        width, height = self.size
        pictures = [image_to_tensor(decode_image(r.image or b""), width, height) for r in self.requests]
        encoded = self.engine.movq.encode(torch.cat(pictures).to(self.engine.device, self.engine.dtype)).latents
        return self._per_row(encoded)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) float32 pixels in [0, 1] at the generation size."""
        decoded = tiling.decode(self.engine.movq, latents, self.engine.decode_tiling)
        return (decoded.float() * 0.5 + 0.5).clamp(0.0, 1.0)

    def _per_row(self, per_request: torch.Tensor) -> torch.Tensor:
        index = torch.tensor([row.request for row in self.rows], device=per_request.device)
        return per_request.index_select(0, index)

    def _results(
        self,
        start: float,
        pixels: dict[int, torch.Tensor] | None = None,
        embeds: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> list[GenerationResult | None]:
        self.timings["total_s"] = time.perf_counter() - start
        results: list[GenerationResult | None] = []
        for index, request in enumerate(self.requests):
            row_ids = [i for i, row in enumerate(self.rows) if row.request == index]
            if not all(bool(self.alive[i]) for i in row_ids):
                results.append(None)
                continue
            result = GenerationResult(request, request.seeds(), timings=dict(self.timings))
            if embeds is not None:
                result.image_embeds = embeds[0][row_ids].float().cpu().numpy()
                result.negative_image_embeds = embeds[1][row_ids].float().cpu().numpy()
            if pixels is not None:
                mine = torch.stack([pixels[i] for i in row_ids])
                exact = to_requested_size(mine, request.width, request.height, resize=request.task in _INPUT_FRAMED)
                result.pixels = exact.permute(0, 2, 3, 1).cpu().numpy()
            results.append(result)
        return results


def _k21_img2img_noise(latents: torch.Tensor, noise: torch.Tensor, strength: float) -> torch.Tensor:
    """Kandinsky 2.1's img2img noising, from the original repo (and diffusers' 2.1 pipeline):
    its own linear 1e-4..0.02 schedule at timestep int(1000 * strength) - 2."""
    betas = torch.linspace(0.0001, 0.02, 1000, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    t = max(int(1000 * strength) - 2, 0)
    a = float(alphas_cumprod[t])
    return a**0.5 * latents + (1 - a) ** 0.5 * noise
