"""The decoder denoising loop, one loop for every task and both families.

It owns what the diffusers Kandinsky loops get wrong for a server (reference §7): CFG off with
several images works, each row of a batch keeps its own init image, mask and generator (diffusers
blends every row with image[:1]), schedulers are driven through SchedulerAdapter, and rows of a
canceled request are dropped between steps while the rest of the batch carries on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from kandinsky_serve.engine import steps
from kandinsky_serve.engine.graphs import unwrapped
from kandinsky_serve.engine.schedulers import SchedulerAdapter

if TYPE_CHECKING:
    from kandinsky_serve.engine.graphs import Wrap
    from kandinsky_serve.engine.pure_schedulers import PureScheduler

# Called after each step with (steps done, total, the latents); returns a bool mask of the rows to
# keep, or None to keep them all. Raising stops the whole run.
StepCheck = Callable[[int, int, torch.Tensor], torch.Tensor | None]


@dataclass
class Conditioning:
    """UNet conditioning per row. `encoder_hidden_states` (2.1's text) goes to the UNet's
    encoder_hidden_states; every other key to added_cond_kwargs (image_embeds, text_embeds, hint)."""

    cond: dict[str, torch.Tensor]
    uncond: dict[str, torch.Tensor]

    def unet_kwargs(self, cfg: bool) -> dict[str, object]:
        rows = {k: torch.cat([self.uncond[k], v]) if cfg else v for k, v in self.cond.items()}
        hidden = rows.pop("encoder_hidden_states", None)
        return {"encoder_hidden_states": hidden, "added_cond_kwargs": rows}

    def select(self, keep: torch.Tensor) -> Conditioning:
        return Conditioning({k: v[keep] for k, v in self.cond.items()}, {k: v[keep] for k, v in self.uncond.items()})


@dataclass
class Inpainting:
    image_latents: torch.Tensor  # (n, 4, h, w): the MoVQ-encoded input image
    keep: torch.Tensor  # (n, 1, h, w): 1 = keep, 0 = repaint
    noise: torch.Tensor  # (n, 4, h, w): the run's initial unit noise, to re-noise the kept region
    masked: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.masked = self.image_latents * self.keep

    def select(self, keep: torch.Tensor) -> Inpainting:
        return Inpainting(self.image_latents[keep], self.keep[keep], self.noise[keep])


@dataclass
class DenoiseJob:
    latents: torch.Tensor  # (n, 4, h, w), already noised and scaled for the first timestep
    conditioning: Conditioning
    generators: list[torch.Generator]
    timesteps: torch.Tensor
    guidance_scale: float
    inpainting: Inpainting | None = None

    def in_layout(self, layout: torch.memory_format) -> DenoiseJob:
        """The job with its image-shaped tensors in `layout` (engine.steps.memory_format)."""
        if layout == torch.contiguous_format and self.latents.is_contiguous():
            return self
        inpainting = self.inpainting
        if inpainting is not None:
            inpainting = Inpainting(
                _laid_out(inpainting.image_latents, layout),
                _laid_out(inpainting.keep, layout),
                _laid_out(inpainting.noise, layout),
            )
        return replace(self, latents=_laid_out(self.latents, layout), inpainting=inpainting)

    def select(self, keep: torch.Tensor) -> DenoiseJob:
        return replace(
            self,
            latents=self.latents[keep],
            conditioning=self.conditioning.select(keep),
            generators=[g for g, k in zip(self.generators, keep.tolist(), strict=True) if k],
            inpainting=self.inpainting.select(keep) if self.inpainting else None,
        )


def _laid_out(tensor: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """`tensor` in `layout` with that layout's exact strides: a one-channel mask already counts as
    channels_last-contiguous with NCHW strides, and torch.cat would then make the inpaint UNet's input
    NCHW."""
    if layout != torch.channels_last:
        return tensor.contiguous(memory_format=layout)
    laid = torch.empty(tensor.shape, dtype=tensor.dtype, device=tensor.device, memory_format=layout)
    return laid.copy_(tensor)


@dataclass
class DenoiseResult:
    latents: torch.Tensor
    rows: torch.Tensor  # indices into the original rows of those still present


def denoise(
    unet: torch.nn.Module,
    scheduler: SchedulerAdapter,
    job: DenoiseJob,
    check: StepCheck | None = None,
    wrap: Wrap = unwrapped,
) -> DenoiseResult:
    """Runs the job's steps: through engine.steps' capture-safe step where the scheduler has a pure
    form (the same pictures, bit for bit in float32), else through the diffusers scheduler. `wrap`
    takes the capture-safe step (engine.graphs replays it as a CUDA graph)."""
    schedule = steps.plan(scheduler, job.timesteps)
    if schedule is not None:
        return DenoiseResult(*_captured_loop(unet, scheduler, job, schedule, check, wrap))
    return _denoise_with_scheduler(unet, scheduler, job, check)


def _denoise_with_scheduler(
    unet: torch.nn.Module,
    scheduler: SchedulerAdapter,
    job: DenoiseJob,
    check: StepCheck | None = None,
) -> DenoiseResult:
    cfg = job.guidance_scale > 1.0
    channels = job.latents.shape[1]
    rows = torch.arange(job.latents.shape[0])
    kwargs = job.conditioning.unet_kwargs(cfg)
    total = len(job.timesteps)

    for i, t in enumerate(job.timesteps):
        model_in = scheduler.scale_model_input(job.latents, t)
        if job.inpainting is not None:
            model_in = torch.cat([model_in, job.inpainting.masked, job.inpainting.keep], dim=1)
        if cfg:
            model_in = torch.cat([model_in, model_in])
        out = unet(sample=model_in, timestep=t, return_dict=False, **kwargs)[0]
        if cfg:
            eps, variance = out.split(channels, dim=1)
            eps_uncond, eps_cond = eps.chunk(2)
            eps = eps_uncond + job.guidance_scale * (eps_cond - eps_uncond)
            out = torch.cat([eps, variance.chunk(2)[1]], dim=1)
        if not scheduler.spec.learned_variance:
            out = out[:, :channels]
        job.latents = scheduler.step(out, t, job.latents, job.generators)

        if job.inpainting is not None:
            known = job.inpainting.image_latents
            if i + 1 < total:
                known = scheduler.add_noise(known, job.inpainting.noise, job.timesteps[i + 1])
            keep = job.inpainting.keep
            job.latents = keep * known + (1.0 - keep) * job.latents

        keep_rows = check(i + 1, total, job.latents) if check is not None else None
        if keep_rows is not None and not bool(keep_rows.all()):
            on_device = keep_rows.to(job.latents.device)
            scheduler.keep_rows(on_device, job.latents.shape[0])
            job = job.select(on_device)
            rows = rows[keep_rows.cpu()]
            kwargs = job.conditioning.unet_kwargs(cfg)

    return DenoiseResult(job.latents, rows)


def unet_inputs(
    unet: Any, conditioning: Conditioning, cfg: bool
) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """The UNet's conditioning for the step; a ControlNet hint goes in already through its block
    (once per run, as HintMemo does eagerly), so the step never runs the memo's identity test."""
    kwargs = conditioning.unet_kwargs(cfg)
    hidden: torch.Tensor | None = kwargs["encoder_hidden_states"]
    added: dict[str, torch.Tensor] = kwargs["added_cond_kwargs"]  # type: ignore[assignment]
    block = getattr(getattr(unet, "add_embedding", None), "input_hint_block", None)
    if "hint" in added and callable(getattr(block, "encode", None)):
        added["hint"] = block.encode(added["hint"])  # type: ignore[union-attr]
    return hidden, added


def _captured_loop(
    unet: torch.nn.Module,
    adapter: SchedulerAdapter,
    job: DenoiseJob,
    schedule: PureScheduler,
    check: StepCheck | None,
    wrap: Wrap,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loop: the step per timestep, then progress and cancel on the host. (latents, rows kept)."""
    layout = steps.memory_format(unet)
    job = job.in_layout(layout)
    cfg = job.guidance_scale > 1.0
    latents = job.latents
    device = latents.device
    channels = latents.shape[1]
    total = len(job.timesteps)
    coefs = schedule.coefs.to(device)
    noisy = any(schedule.draws)
    blend = steps.blend_weights(adapter, job.timesteps, latents) if job.inpainting is not None else None
    guidance = torch.tensor(job.guidance_scale, dtype=torch.float32, device=device)
    step = wrap(steps.DecoderStep(unet, schedule, adapter.spec.name, cfg, channels, adapter.spec.learned_variance))
    hidden, added = unet_inputs(unet, job.conditioning, cfg)
    rows = torch.arange(latents.shape[0])
    state = tuple(torch.zeros_like(latents) for _ in range(schedule.slots)) if schedule.slots else None

    for i in range(total):
        inpaint = None
        if job.inpainting is not None and blend is not None:
            p = job.inpainting
            inpaint = (p.masked, p.keep, p.image_latents, p.noise, blend[i])
        step_noise = None
        if noisy:  # zeros where diffusers draws nothing (DDPM at t = 0): the step's inputs keep their shapes
            step_noise = steps.draw(job.generators, job.latents) if schedule.draws[i] else torch.zeros_like(job.latents)
        job.latents, state = step(
            job.latents, job.timesteps[i], coefs[i], step_noise, guidance, hidden, added, state, inpaint
        )

        keep_rows = check(i + 1, total, job.latents) if check is not None else None
        if keep_rows is not None and not bool(keep_rows.all()):
            on_device = keep_rows.to(device)
            job = job.select(on_device).in_layout(layout)  # indexing returns NCHW
            state = None if state is None else tuple(s[on_device].contiguous(memory_format=layout) for s in state)
            rows = rows[keep_rows.cpu()]
            hidden, added = unet_inputs(unet, job.conditioning, cfg)
    return job.latents, rows
