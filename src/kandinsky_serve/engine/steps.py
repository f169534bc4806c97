"""The decoder step as one function of tensors: what a CUDA graph (or torch.compile fullgraph) captures.

Per step, `DecoderStep` does the scheduler's input scaling, the inpaint concatenation, the UNet over
the CFG pair, the guidance combine, the scheduler update (engine.pure_schedulers) and the inpaint
blend: tensors in, the next latents out, with no host synchronisation, no branch on a tensor's value
and the same shapes at every step. Everything that depends on the step number is an input row
(timestep, coefficients, blend weights) or drawn for it (noise) indexed by the loop, outside the function.
The loop around it keeps what must stay on the host: progress, previews and cancellation, and
dropping canceled rows between steps (a new shape, so a new graph; it happens at most once a
request).

The loop (engine.decoder) passes the step through a `wrap`: the engine's `StepGraphs` (engine.graphs:
one CUDA graph per shape bucket), the identity when graphs are off, and in tests
`torch.compile(fullgraph=True)` to prove that no step breaks the graph. A step's `signature` says
what besides its inputs' shapes makes its graph.
"""

from __future__ import annotations

import torch

from kandinsky_serve.engine import legacy, pure_multistep, pure_schedulers
from kandinsky_serve.engine.pure_schedulers import PureScheduler, State
from kandinsky_serve.engine.schedulers import SchedulerAdapter

_BUILDERS = pure_schedulers.BUILDERS | pure_multistep.BUILDERS


def plan(adapter: SchedulerAdapter, timesteps: torch.Tensor) -> PureScheduler | None:
    """The capture-safe schedule of a run, or None: the loop then drives the diffusers scheduler
    (the old loops while engine.legacy is on, or a scheduler configured beyond the pure forms)."""
    builder = _BUILDERS.get(type(adapter.scheduler))
    if legacy.active() or builder is None or adapter.scheduler.config.prediction_type != "epsilon":
        return None
    return builder(adapter, timesteps)


class DecoderStep:
    """One denoising step, its static choices (CFG, inpainting, channels) fixed at construction."""

    def __init__(
        self, unet: torch.nn.Module, schedule: PureScheduler, scheduler: str, cfg: bool, channels: int, learned: bool
    ) -> None:
        self.unet = unet
        self.schedule = schedule
        self.scheduler = scheduler  # the offered name: P-Sampler is DDPM's maths with other static choices
        self.cfg = cfg
        self.channels = channels
        self.learned = learned  # P-Sampler: the scheduler reads the UNet's variance channels

    @property
    def signature(self) -> tuple[object, ...]:
        """What fixes this step's graph besides its inputs' shapes (the coefficients are inputs)."""
        return ("decoder", id(self.unet), self.scheduler, self.cfg, self.channels, self.learned)

    def __call__(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        coef: torch.Tensor,
        noise: torch.Tensor | None,
        guidance: torch.Tensor,
        hidden: torch.Tensor | None,
        added: dict[str, torch.Tensor],
        state: State = None,
        inpaint: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, State]:
        model_in = self.schedule.scale(latents, coef)
        if inpaint is not None:
            masked, keep = inpaint[0], inpaint[1]
            model_in = torch.cat([model_in, masked, keep], dim=1)
        if self.cfg:
            model_in = torch.cat([model_in, model_in])
        out = self.unet(
            sample=model_in, timestep=t, encoder_hidden_states=hidden, added_cond_kwargs=added, return_dict=False
        )[0]
        if self.cfg:
            eps, variance = out.split(self.channels, dim=1)
            eps_uncond, eps_cond = eps.chunk(2)
            eps = eps_uncond + guidance * (eps_cond - eps_uncond)
            out = torch.cat([eps, variance.chunk(2)[1]], dim=1)
        if not self.learned:
            out = out[:, : self.channels]
        latents, state = self.schedule.update(out, latents, coef, noise, state)
        if inpaint is not None:
            _, keep, image_latents, unit_noise, blend = inpaint
            known = blend[0] * image_latents + blend[1] * unit_noise
            latents = keep * known + (1.0 - keep) * latents
        return latents, state


def memory_format(unet: torch.nn.Module) -> torch.memory_format:
    """channels_last when the UNet's weights are (EngineOptions.channels_last): the latents and every
    image-shaped input then are too, so the step computes in NHWC from end to end, where NCHW latents
    would make every elementwise op of the scheduler mix the two layouts."""
    weight = getattr(getattr(unet, "conv_in", None), "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 4 and not weight.is_contiguous():
        if weight.is_contiguous(memory_format=torch.channels_last):
            return torch.channels_last
    return torch.contiguous_format


def draw(generators: list[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    """A step's noise as diffusers' `step()` draws it: one (1, c, h, w) draw from each row's generator
    in row order, on the CPU in the latents' dtype (randn_tensor with CPU generators), then moved.
    Drawn by the loop before the step, so the step only reads an input (a static buffer once captured);
    drawn per step rather than for the whole run up front, so memory stays flat at large sizes."""
    shape = (1, *like.shape[1:])
    noise = torch.cat([torch.randn(shape, generator=g, dtype=like.dtype) for g in generators])
    if like.dim() == 4 and not like.is_contiguous() and like.is_contiguous(memory_format=torch.channels_last):
        noise = noise.contiguous(memory_format=torch.channels_last)  # on the host: no extra kernel
    if like.device.type != "cuda":
        return noise.to(like.device)
    # pinned and non-blocking: a pageable copy would make the host wait for the GPU every step, so it
    # could not queue the next step (or draw its noise) while this one runs
    return noise.pin_memory().to(like.device, non_blocking=True)


def blend_weights(adapter: SchedulerAdapter, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(steps, 2): inpainting re-noises the kept region to the next timestep as a * image + b * noise
    (diffusers' add_noise, whose weights these are), and keeps the image itself after the last step."""
    s = adapter.scheduler
    start = len(s.timesteps) - len(timesteps)
    one = torch.ones(1, dtype=like.dtype, device=like.device)
    zero = torch.zeros_like(one)
    rows = []
    for i in range(len(timesteps)):
        if i + 1 < len(timesteps):
            if hasattr(s, "_step_index"):  # sigma schedulers read the step the legacy loop would be at
                s._step_index = start + i + 1
            t_next = timesteps[i + 1]
            rows.append(torch.cat([adapter.add_noise(one, zero, t_next), adapter.add_noise(zero, one, t_next)]))
        else:
            rows.append(torch.cat([one, zero]))
    return torch.stack(rows)
