"""The diffusion prior, run by our own loop: prompts (or images) to CLIP image embeddings.

Differences from diffusers' prior pipeline, each for the server's sake:
- rows of different requests share one batch, each with its own CFG negative text and its own
  generator, so a batched row gets the noise and conditioning it would get alone (the result is
  equal up to the kernels' batch-dependent rounding, see engine.run);
- the zero-image embedding (the default negative, about 1 TFLOP of image encoder at full size)
  is computed once, and prompt encodings are kept in a small LRU cache;
- a callback after every step reports progress and lets the caller cancel;
- each step is one function of tensors (engine.prior_step, capture-safe like the decoder's), so a
  CUDA graph or a compiled graph can replay it: at the prior's size the per-op launches of diffusers'
  step (and its host-side coefficient arithmetic) are most of the prior's time on a GPU.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from diffusers import UnCLIPScheduler
from PIL import Image

from kandinsky_serve.engine import legacy, prior_step
from kandinsky_serve.engine.graphs import Wrap, unwrapped
from kandinsky_serve.engine.prior_step import PriorStep
from kandinsky_serve.engine.sources import PriorParts

StepCallback = Callable[[int, int], None]

_TEXT_CACHE_SIZE = 256
_SCHEDULE_CACHE_SIZE = 64


@dataclass(frozen=True)
class PriorRow:
    prompt: str
    negative: str  # the CFG negative text: the request's negative prompt, or ""
    generator: torch.Generator


@dataclass(frozen=True)
class _TextEncoding:
    embeds: torch.Tensor  # (1, dim)
    hidden: torch.Tensor  # (1, 77, width)
    mask: torch.Tensor  # (1, 77) bool


@dataclass(frozen=True)
class _Run:
    """One sample() call's inputs to its loop."""

    timesteps: torch.Tensor
    prevs: list[int | torch.Tensor]  # each step's prev_timestep: the next timestep, -1 after the last
    generators: list[torch.Generator]
    cfg: bool
    guidance_scale: float
    embeds: torch.Tensor
    hidden: torch.Tensor
    mask: torch.Tensor
    on_step: StepCallback | None


class PriorRunner:
    def __init__(self, parts: PriorParts, device: torch.device, dtype: torch.dtype) -> None:
        self.parts = parts
        self.device = device
        self.dtype = dtype
        self._texts: OrderedDict[str, _TextEncoding] = OrderedDict()
        self._zero: torch.Tensor | None = None
        # where a captured or compiled step goes in (once per sample() call); tests put
        # torch.compile(fullgraph=True) here to prove the step never breaks the graph
        self.wrap: Wrap = unwrapped
        self._schedules: dict[int, tuple[prior_step.PriorSchedule, tuple[torch.Tensor, ...]]] = {}

    @property
    def embedding_dim(self) -> int:
        return int(self.parts.prior.config.embedding_dim)

    def zero_embed(self) -> torch.Tensor:
        """The image encoder's embedding of an all-black image: the negative without a prompt."""
        if self._zero is None:
            size = self.parts.image_encoder.config.image_size
            black = torch.zeros(1, 3, size, size, device=self.device, dtype=self.dtype)
            self._zero = self.parts.image_encoder(black)["image_embeds"]
        return self._zero

    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = self.parts.image_processor(list(images), return_tensors="pt").pixel_values
        out: torch.Tensor = self.parts.image_encoder(pixels.to(self.device, self.dtype))["image_embeds"]
        return out

    def encode_texts(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # One text a forward: kernels round differently at other batch sizes, so a text encoded with
        # whichever others were missing at the time would give a lone job other bits after a restart
        # than with a warm cache. Alone, an encoding depends on its text only; each is cached, so
        # the text encoder runs once per new prompt, against 25 prior and 50 UNet steps per batch.
        for text in dict.fromkeys(t for t in texts if t not in self._texts):
            tokens = self.parts.tokenizer(
                [text],
                padding="max_length",
                max_length=self.parts.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            out = self.parts.text_encoder(tokens.input_ids.to(self.device))
            mask = tokens.attention_mask.bool().to(self.device)
            self._texts[text] = _TextEncoding(out.text_embeds, out.last_hidden_state, mask)
        for text in texts:
            self._texts.move_to_end(text)
        encodings = [self._texts[t] for t in texts]
        while len(self._texts) > max(_TEXT_CACHE_SIZE, len(texts)):
            self._texts.popitem(last=False)
        return (
            torch.cat([e.embeds for e in encodings]),
            torch.cat([e.hidden for e in encodings]),
            torch.cat([e.mask for e in encodings]),
        )

    def sample(
        self,
        rows: Sequence[PriorRow],
        steps: int,
        guidance_scale: float,
        on_step: StepCallback | None = None,
    ) -> torch.Tensor:
        """One image embedding per row, (len(rows), embedding_dim)."""
        cfg = guidance_scale > 1.0
        texts = [r.prompt for r in rows]
        if cfg:
            texts = [r.negative for r in rows] + texts
        embeds, hidden, mask = self.encode_texts(texts)

        scheduler = UnCLIPScheduler.from_config(self.parts.scheduler_config)
        # UnCLIP's set_timesteps(1) divides by steps - 1; one step is the first of two, straight to x0
        scheduler.set_timesteps(max(steps, 2), device=self.device)
        timesteps = scheduler.timesteps[:steps]
        # -1 at the last step: the sample itself (what diffusers' t - 1 gives when the last t is 0)
        prevs: list[int | torch.Tensor] = [*timesteps[1:], -1]
        generators = [r.generator for r in rows]
        noise = torch.cat([torch.randn(1, self.embedding_dim, generator=g) for g in generators])
        latents = (noise * scheduler.init_noise_sigma).to(self.device, self.dtype)
        loop = self._legacy_loop if legacy.active() else self._step_loop
        run = _Run(timesteps, prevs, generators, cfg, guidance_scale, embeds, hidden, mask, on_step)
        latents = loop(scheduler, run, latents)

        result: torch.Tensor = self.parts.prior.post_process_latents(latents)
        return result

    def _step_loop(self, scheduler: UnCLIPScheduler, run: _Run, latents: torch.Tensor) -> torch.Tensor:
        """The capture-safe loop: the step (through `wrap`) per timestep, progress on the host."""
        schedule, coefs = self._schedule(scheduler, run)
        draws = prior_step.draw_noise(run.generators, self.embedding_dim, schedule.draws, self.dtype)
        step = self.wrap(PriorStep(self.parts.prior, schedule, run.cfg))
        guidance = torch.tensor(run.guidance_scale, dtype=torch.float32, device=self.device)
        total = len(run.timesteps)
        noise = draws.to(self.device).unbind()  # views made once: the loop dispatches nothing per step
        for i, t in enumerate(run.timesteps.unbind()):
            latents = step(latents, t, coefs[i], noise[i], guidance, run.embeds, run.hidden, run.mask)
            if run.on_step is not None:
                run.on_step(i + 1, total)
        return latents

    def _schedule(
        self, scheduler: UnCLIPScheduler, run: _Run
    ) -> tuple[prior_step.PriorSchedule, tuple[torch.Tensor, ...]]:
        """The run's schedule and its coefficient rows on the device. A function of the step count
        alone (the config is the runner's), kept: its host arithmetic is some 50 scalar ops a step."""
        steps = len(run.timesteps)
        if steps not in self._schedules:
            schedule = prior_step.plan(scheduler, run.timesteps, run.prevs)
            if len(self._schedules) >= _SCHEDULE_CACHE_SIZE:
                self._schedules.clear()
            self._schedules[steps] = (schedule, schedule.coefs.to(self.device).unbind())
        return self._schedules[steps]

    def _legacy_loop(self, scheduler: UnCLIPScheduler, run: _Run, latents: torch.Tensor) -> torch.Tensor:
        """The pre-issue-12 loop, diffusers' step() per step (engine.legacy), for A/B checks."""
        embeds, hidden, mask, cfg, generators = run.embeds, run.hidden, run.mask, run.cfg, run.generators
        guidance_scale, timesteps, prevs, on_step = run.guidance_scale, run.timesteps, run.prevs, run.on_step
        for i, (t, prev) in enumerate(zip(timesteps, prevs, strict=True)):
            model_in = torch.cat([latents, latents]) if cfg else latents
            predicted = self.parts.prior(
                model_in,
                timestep=t,
                proj_embedding=embeds,
                encoder_hidden_states=hidden,
                attention_mask=mask,
            ).predicted_image_embedding
            if cfg:
                uncond, cond = predicted.chunk(2)
                predicted = uncond + guidance_scale * (cond - uncond)
            latents = scheduler.step(
                predicted, timestep=t, sample=latents, generator=generators, prev_timestep=prev
            ).prev_sample
            if on_step is not None:
                on_step(i + 1, len(timesteps))
        return latents
