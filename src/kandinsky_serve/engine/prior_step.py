"""The prior step as one function of tensors: what a CUDA graph (or torch.compile fullgraph) captures.

diffusers' UnCLIPScheduler.step works out its coefficients from Python ints each call (`prev_timestep
== t - 1`, `prev_timestep >= 0`), draws its noise from the generators inside the step and adds it only
`if t > 0`: host work and branches a captured graph cannot hold, and at the prior's size (a few
rows of 1280 numbers) that host work is most of the prior's time on a GPU. Here, as for the decoder
(engine.steps, engine.pure_schedulers), everything that depends on the step number alone is worked
out before the loop from the very scheduler instance, with the same tensor operations diffusers runs,
so float32 embeddings are bit-identical: one coefficient row per step, and all of the run's noise,
drawn up front from each row's generator in diffusers' order (zeros where diffusers draws nothing).
`PriorStep` is then the CFG doubling, the prior transformer, the guidance combine and the update:
tensors in, next latents out, the same shapes at every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import UnCLIPScheduler

# coefficient row columns
_SQRT_BETA_PROD, _SQRT_ALPHA_PROD, _X0_COEFF, _SAMPLE_COEFF, _NOISE_A, _NOISE_B = range(6)


@dataclass(frozen=True)
class PriorSchedule:
    """One run's UnCLIP schedule as tensors, and the static choices of its update."""

    coefs: torch.Tensor  # (steps, 6) float32 on the host, columns as named above
    draws: list[bool]  # per step: whether diffusers draws noise (t > 0)
    epsilon: bool  # prediction_type "epsilon" (else "sample": the model predicts x0)
    clip: float | None  # clip_sample_range where clip_sample is set
    learned: bool  # variance_type "learned_range": log-variance from the model's second half

    def update(self, out: torch.Tensor, latents: torch.Tensor, c: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """UnCLIPScheduler.step's arithmetic in its order; `noise` is zeros where it draws none."""
        predicted_variance = None
        if self.learned and out.shape[1] == latents.shape[1] * 2:
            out, predicted_variance = torch.split(out, latents.shape[1], dim=1)
        if self.epsilon:
            x0 = (latents - c[_SQRT_BETA_PROD] * out) / c[_SQRT_ALPHA_PROD]
        else:
            x0 = out
        if self.clip is not None:
            x0 = torch.clamp(x0, -self.clip, self.clip)
        prev = c[_X0_COEFF] * x0 + c[_SAMPLE_COEFF] * latents
        if self.learned:
            if predicted_variance is None:  # diffusers fails here too (a TypeError on None + 1)
                raise ValueError("learned_range needs a model output twice as wide as the sample")
            frac = (predicted_variance + 1) / 2
            log_variance = frac * c[_NOISE_B] + (1 - frac) * c[_NOISE_A]
            # where no noise is drawn the draws are zeros: exp(...) * 0 adds nothing
            return prev + (0.5 * log_variance).exp() * noise
        return prev + c[_NOISE_A] * noise


def plan(scheduler: UnCLIPScheduler, timesteps: torch.Tensor, prevs: Sequence[int | torch.Tensor]) -> PriorSchedule:
    """Coefficient rows for stepping from each of `timesteps` to its `prevs` entry, as step() would."""
    config = scheduler.config
    if config.variance_type not in ("fixed_small_log", "learned_range"):
        raise ValueError(f"UnCLIP variance_type {config.variance_type!r} has no pure form")
    if config.prediction_type not in ("epsilon", "sample"):
        raise ValueError(f"UnCLIP prediction_type {config.prediction_type!r} has no pure form")
    rows, draws = [], []
    zero = torch.tensor(0.0)
    for t, prev in zip(timesteps.cpu(), prevs, strict=True):
        prev_t = prev.cpu() if isinstance(prev, torch.Tensor) else prev
        a_t = scheduler.alphas_cumprod[t]
        a_prev = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.one
        beta_prod_t, beta_prod_prev = 1 - a_t, 1 - a_prev
        if prev_t == t - 1:
            beta, alpha = scheduler.betas[t], scheduler.alphas[t]
        else:
            beta = 1 - a_t / a_prev
            alpha = 1 - beta
        x0_coeff = (a_prev ** (0.5) * beta) / beta_prod_t
        sample_coeff = alpha ** (0.5) * beta_prod_prev / beta_prod_t
        noise_a, noise_b = zero, zero
        if t > 0:
            if config.variance_type == "fixed_small_log":
                noise_a = scheduler._get_variance(t, prev_timestep=prev_t)  # already the std
            else:  # _get_variance's min_log and max_log, mixed in the step by the predicted fraction
                noise_a = (beta_prod_prev / beta_prod_t * beta).log()
                noise_b = beta.log()
        rows.append(torch.stack([beta_prod_t ** (0.5), a_t ** (0.5), x0_coeff, sample_coeff, noise_a, noise_b]))
        draws.append(bool(t > 0))
    clip = float(config.clip_sample_range) if config.clip_sample else None
    return PriorSchedule(
        torch.stack(rows).float(),
        draws,
        config.prediction_type == "epsilon",
        clip,
        config.variance_type == "learned_range",
    )


def draw_noise(
    generators: Sequence[torch.Generator], dim: int, draws: Sequence[bool], dtype: torch.dtype
) -> torch.Tensor:
    """(steps, rows, dim): each step's noise as UnCLIPScheduler.step draws it (randn_tensor: one (1, dim)
    draw per row from its generator, in row order, on the CPU in the model's dtype), zeros where it
    draws none. Step-major like the old loop, so rows sharing a generator (a fuse's prompts, a
    negative's own row) take the same numbers; all up front, so the loop only indexes a tensor."""
    steps = []
    for drawn in draws:
        if drawn:
            steps.append(torch.cat([torch.randn((1, dim), generator=g, dtype=dtype) for g in generators]))
        else:
            steps.append(torch.zeros(len(generators), dim, dtype=dtype))
    return torch.stack(steps)


class PriorStep:
    """One prior step, its static choices (CFG, the schedule's update) fixed at construction."""

    def __init__(self, prior: torch.nn.Module, schedule: PriorSchedule, cfg: bool) -> None:
        self.prior = prior
        self.schedule = schedule
        self.cfg = cfg

    @property
    def signature(self) -> tuple[object, ...]:
        """What fixes this step's graph besides its inputs' shapes (engine.graphs): one prior and one
        scheduler config per engine, and the coefficients are inputs."""
        return ("prior", id(self.prior), self.cfg)

    def __call__(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        coef: torch.Tensor,
        noise: torch.Tensor,
        guidance: torch.Tensor,
        embeds: torch.Tensor,
        hidden: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        model_in = torch.cat([latents, latents]) if self.cfg else latents
        predicted: torch.Tensor = self.prior(
            model_in,
            timestep=t,
            proj_embedding=embeds,
            encoder_hidden_states=hidden,
            attention_mask=mask,
            return_dict=False,
        )[0]
        if self.cfg:
            uncond, cond = predicted.chunk(2)
            predicted = uncond + guidance * (cond - uncond)
        return self.schedule.update(predicted, latents, coef, noise)
