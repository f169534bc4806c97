"""Scheduler steps as pure tensor functions, for a decoder step that CUDA graphs can capture.

A diffusers scheduler keeps Python state (a step index, multistep history), branches on the timestep
(`if t > 0`) and draws its noise from the generators inside `step()`: none of that can live in a
captured graph. Here everything that depends on the step number alone is worked out on the host
before the loop, from the very scheduler instance the adapter set up: one row of coefficients per
step (float32, the values diffusers computes with) and which steps draw noise; the loop draws that
noise from each row's generator, in diffusers' order, and hands it to the step as an input. The step
itself is then arithmetic on tensors, the same operations in the same order as diffusers, so float32
pictures are bit-identical.

Capture-safe here: DDPM and P-Sampler (fixed_small(_log), fixed_large, learned_range variance;
thresholding and clipping), DDIM (eta 0), Euler (no churn) and Euler a; in engine.pure_multistep,
whose histories are state tensors the step takes and returns: DPM++ 2M (also Karras), UniPC (order 2,
bh2, with its corrector) and PLMS. Every scheduler we offer, as configured, has a pure form; other
configurations (engine.steps.plan returns None) still run through SchedulerAdapter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
)

from kandinsky_serve.engine.schedulers import SchedulerAdapter

# (model output, latents, coefficient row, this step's noise or None, state) -> (next latents, state);
# the state is what a multistep solver carries to the next step (latents-shaped tensors: DPM++ the last
# x0, UniPC two x0s and a sample, PLMS three outputs and a sample), else None
State: TypeAlias = tuple[torch.Tensor, ...] | None
Update = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, State], tuple[torch.Tensor, State]]
Scale = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PureScheduler:
    """One run's schedule as tensors: coefficient rows, which steps draw noise, and the step maths."""

    name: str
    coefs: torch.Tensor  # (steps, k) float32 on the host
    draws: list[bool]  # per step: whether diffusers draws noise from the generators at this step
    update: Update
    scale: Scale  # scale_model_input
    slots: int = 0  # how many latents-shaped state tensors it carries from step to step (zeros before the first)


def _stateless(step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]) -> Update:
    def update(
        out: torch.Tensor, latents: torch.Tensor, c: torch.Tensor, noise: torch.Tensor | None, state: State
    ) -> tuple[torch.Tensor, State]:
        return step(out, latents, c, noise), None

    return update


def _no_scale(latents: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    return latents


def _threshold(sample: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """diffusers' dynamic thresholding (_threshold_sample), with static shapes only."""
    dtype = sample.dtype
    batch, channels, *rest = sample.shape
    if dtype not in (torch.float32, torch.float64):
        sample = sample.float()
    sample = sample.reshape(batch, channels * math.prod(rest))
    s = torch.quantile(sample.abs(), ratio, dim=1)
    s = torch.clamp(s, min=1, max=max_value).unsqueeze(1)
    sample = torch.clamp(sample, -s, s) / s
    return sample.reshape(batch, channels, *rest).to(dtype)


def _x0_fix(config: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    if config.thresholding:
        ratio, max_value = float(config.dynamic_thresholding_ratio), float(config.sample_max_value)
        return lambda x0: _threshold(x0, ratio, max_value)
    if config.clip_sample:
        bound = float(config.clip_sample_range)
        return lambda x0: x0.clamp(-bound, bound)
    return lambda x0: x0


def _ddpm(adapter: SchedulerAdapter, timesteps: torch.Tensor) -> PureScheduler | None:
    s = adapter.scheduler
    variance_type = s.config.variance_type
    if variance_type not in ("fixed_small", "fixed_small_log", "fixed_large", "learned_range"):
        return None
    rows, draws = [], []
    for t in timesteps.cpu():
        prev_t = s.previous_timestep(t)
        a_t = s.alphas_cumprod[t]
        a_prev = s.alphas_cumprod[prev_t] if prev_t >= 0 else s.one
        beta_t, beta_prev = 1 - a_t, 1 - a_prev
        current_alpha = a_t / a_prev
        current_beta = 1 - current_alpha
        x0_coeff = (a_prev ** (0.5) * current_beta) / beta_t
        sample_coeff = current_alpha ** (0.5) * beta_prev / beta_t
        if variance_type == "learned_range":
            variance = torch.clamp((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev), min=1e-20)
            noise_a, noise_b = torch.log(variance), torch.log(1 - a_t / a_prev)  # min_log, max_log
        elif variance_type == "fixed_small_log":
            noise_a, noise_b = s._get_variance(t), torch.tensor(0.0)
        else:
            noise_a, noise_b = s._get_variance(t) ** 0.5, torch.tensor(0.0)
        rows.append(torch.stack([beta_t ** (0.5), a_t ** (0.5), x0_coeff, sample_coeff, noise_a, noise_b]))
        draws.append(bool(t > 0))
    fix, learned = _x0_fix(s.config), variance_type == "learned_range"

    def step(out: torch.Tensor, latents: torch.Tensor, c: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        predicted_variance = None
        if learned and out.shape[1] == latents.shape[1] * 2:
            out, predicted_variance = torch.split(out, latents.shape[1], dim=1)
        x0 = fix((latents - c[0] * out) / c[1])
        prev = c[2] * x0 + c[3] * latents
        if noise is None:
            return prev
        if predicted_variance is not None:
            frac = (predicted_variance + 1) / 2
            log_variance = frac * c[5] + (1 - frac) * c[4]
            return prev + torch.exp(0.5 * log_variance) * noise
        return prev + c[4] * noise

    return PureScheduler("DDPM", torch.stack(rows).float(), draws, _stateless(step), _no_scale)


def _ddim(adapter: SchedulerAdapter, timesteps: torch.Tensor) -> PureScheduler | None:
    s = adapter.scheduler
    rows = []
    for t in timesteps.cpu():
        prev_t = t - s.config.num_train_timesteps // s.num_inference_steps
        a_t = s.alphas_cumprod[t]
        a_prev = s.alphas_cumprod[prev_t] if prev_t >= 0 else s.final_alpha_cumprod
        beta_t = 1 - a_t
        std_dev_t = 0.0 * s._get_variance(t, prev_t) ** (0.5)  # eta = 0: the adapter never passes one
        direction = (1 - a_prev - std_dev_t**2) ** (0.5)
        rows.append(torch.stack([beta_t ** (0.5), a_t ** (0.5), a_prev ** (0.5), direction]))
    fix = _x0_fix(s.config)

    def step(out: torch.Tensor, latents: torch.Tensor, c: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        x0 = fix((latents - c[0] * out) / c[1])
        return c[2] * x0 + c[3] * out

    return PureScheduler("DDIM", torch.stack(rows).float(), [False] * len(rows), _stateless(step), _no_scale)


def _sigma_rows(adapter: SchedulerAdapter, timesteps: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    s = adapter.scheduler
    start = len(s.timesteps) - len(timesteps)  # the adapter's begin index (img2img starts late)
    return [(s.sigmas[start + i], s.sigmas[start + i + 1]) for i in range(len(timesteps))]


def _euler_scale(latents: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return latents / c[0]


def _euler(adapter: SchedulerAdapter, timesteps: torch.Tensor) -> PureScheduler | None:
    s = adapter.scheduler
    if s.config.prediction_type != "epsilon":
        return None
    rows = []
    for sigma, sigma_next in _sigma_rows(adapter, timesteps):
        sigma_hat = sigma * (0.0 + 1)  # no churn: the adapter never passes s_churn
        rows.append(torch.stack([(sigma**2 + 1) ** 0.5, sigma_hat, sigma_next - sigma_hat]))

    def step(out: torch.Tensor, latents: torch.Tensor, c: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        sample = latents.to(torch.float32)
        x0 = sample - c[1] * out
        derivative = (sample - x0) / c[1]
        return (sample + derivative * c[2]).to(out.dtype)

    return PureScheduler("Euler", torch.stack(rows).float(), [False] * len(rows), _stateless(step), _euler_scale)


def _euler_ancestral(adapter: SchedulerAdapter, timesteps: torch.Tensor) -> PureScheduler | None:
    s = adapter.scheduler
    if s.config.prediction_type != "epsilon":
        return None
    rows = []
    for sigma, sigma_to in _sigma_rows(adapter, timesteps):
        sigma_up = (sigma_to**2 * (sigma**2 - sigma_to**2) / sigma**2) ** 0.5
        sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
        rows.append(torch.stack([(sigma**2 + 1) ** 0.5, sigma, sigma_down - sigma, sigma_up]))

    def step(out: torch.Tensor, latents: torch.Tensor, c: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        sample = latents.to(torch.float32)
        x0 = sample - c[1] * out
        derivative = (sample - x0) / c[1]
        prev = sample + derivative * c[2]
        if noise is not None:
            prev = prev + noise * c[3]
        return prev.to(out.dtype)

    return PureScheduler("Euler a", torch.stack(rows).float(), [True] * len(rows), _stateless(step), _euler_scale)


Builder = Callable[[SchedulerAdapter, torch.Tensor], PureScheduler | None]
BUILDERS: dict[type, Builder] = {  # engine.steps.plan picks from these and pure_multistep's
    DDPMScheduler: _ddpm,
    DDIMScheduler: _ddim,
    EulerDiscreteScheduler: _euler,
    EulerAncestralDiscreteScheduler: _euler_ancestral,
}
