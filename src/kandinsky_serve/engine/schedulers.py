"""The decoder schedulers we offer, by name, and an adapter that drives any of them correctly.

The stock Kandinsky loops pass `generator=` to every `step()` (UniPC and PLMS raise TypeError)
and never call `scale_model_input` (Euler runs but is numerically wrong). Our loop goes through
`SchedulerAdapter`, which does both properly, so every scheduler listed here is right.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from kandinsky_serve.domain.catalogue import DEFAULT, OFFERED, Family, scheduler_name

__all__ = ["DEFAULT", "OFFERED", "SCHEDULERS", "SchedulerAdapter", "SchedulerSpec", "resolve"]

Factory = Callable[[dict[str, Any]], Any]

# The original repo's p_sampler: ancestral DDPM with the UNet's learned variance and x0 clamped to
# [-2, 2]; diffusers' stand-in is the kandinsky-2-1 `ddpm_scheduler` config (reference §5.2).
_P_SAMPLER = {
    "variance_type": "learned_range",
    "thresholding": True,
    "sample_max_value": 2.0,
    "clip_sample_range": 2.0,
    "dynamic_thresholding_ratio": 0.995,
}


@dataclass(frozen=True)
class SchedulerSpec:
    name: str
    factory: Factory
    # Euler's sigma-space latents cannot take 2.1's original-repo img2img noising formula
    variance_preserving: bool = True

    @property
    def learned_variance(self) -> bool:
        return self.name == "P-Sampler"


def _make(cls: Any, **overrides: Any) -> Factory:
    return lambda base: cls.from_config({**base, **overrides})


SCHEDULERS: dict[str, SchedulerSpec] = {
    spec.name: spec
    for spec in (
        SchedulerSpec("DDPM", _make(DDPMScheduler)),
        SchedulerSpec("DDIM", _make(DDIMScheduler)),
        # DPM-Solver must not see variance_type learned_range: it then slices 3 channels (DeepFloyd IF)
        SchedulerSpec("DPM++ 2M", _make(DPMSolverMultistepScheduler, variance_type=None)),
        SchedulerSpec(
            "DPM++ 2M Karras",
            _make(DPMSolverMultistepScheduler, variance_type=None, use_karras_sigmas=True),
        ),
        SchedulerSpec("UniPC", _make(UniPCMultistepScheduler, variance_type=None)),
        SchedulerSpec("PLMS", _make(PNDMScheduler, skip_prk_steps=True)),
        SchedulerSpec("Euler", _make(EulerDiscreteScheduler), variance_preserving=False),
        SchedulerSpec("Euler a", _make(EulerAncestralDiscreteScheduler), variance_preserving=False),
        SchedulerSpec("P-Sampler", _make(DDPMScheduler, **_P_SAMPLER)),
    )
}

# The names, and which family offers which, are the catalogue's (domain.catalogue): an API process
# checks a request's scheduler without importing diffusers. tests/domain/test_catalogue.py checks
# that every name there has its factory here.


def resolve(family: Family, name: str | None) -> SchedulerSpec:
    """The scheduler a request asks for, by any common spelling; a ServeError names the choices."""
    return SCHEDULERS[scheduler_name(family, name)]


class SchedulerAdapter:
    """One scheduler instance for one denoising run, driven the way each scheduler expects."""

    def __init__(self, spec: SchedulerSpec, base_config: dict[str, Any]) -> None:
        self.spec = spec
        self.scheduler = spec.factory(base_config)
        self._takes_generator = "generator" in inspect.signature(self.scheduler.step).parameters

    def timesteps(self, steps: int, strength: float, device: torch.device) -> torch.Tensor:
        """The timesteps to run; img2img (strength < 1) starts part way down the schedule."""
        self.scheduler.set_timesteps(steps, device=device)
        all_steps: torch.Tensor = self.scheduler.timesteps
        order = getattr(self.scheduler, "order", 1)
        run = min(int(steps * strength), steps)
        start = (steps - run) * order
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(start)
        return all_steps[start:]

    @property
    def init_noise_sigma(self) -> float:
        return float(self.scheduler.init_noise_sigma)

    def scale_model_input(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scaled: torch.Tensor = self.scheduler.scale_model_input(latents, t)
        return scaled

    def step(
        self,
        model_output: torch.Tensor,
        t: torch.Tensor,
        latents: torch.Tensor,
        generators: list[torch.Generator],
    ) -> torch.Tensor:
        kwargs: dict[str, Any] = {"return_dict": False}
        if self._takes_generator:
            kwargs["generator"] = generators
        out: torch.Tensor = self.scheduler.step(model_output, t, latents, **kwargs)[0]
        return out

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        noisy: torch.Tensor = self.scheduler.add_noise(original, noise, t.reshape(1).expand(original.shape[0]))
        return noisy

    def keep_rows(self, keep: torch.Tensor, batch: int) -> None:
        """Drops canceled rows from multistep history (DPM, UniPC, PLMS keep past model outputs).

        Only 4-D tensors are latent-shaped state; 1-D schedule tensors are left alone even when
        their length happens to equal the batch size.
        """

        def select(value: Any) -> Any:
            if isinstance(value, torch.Tensor) and value.ndim == 4 and value.shape[0] == batch:
                return value[keep]
            if isinstance(value, list):
                return [select(v) for v in value]
            return value

        for name, value in vars(self.scheduler).items():
            if isinstance(value, torch.Tensor | list):
                setattr(self.scheduler, name, select(value))
