"""What a job costs in credits: one credit is one 512x512 image with 50 decoder steps."""

from __future__ import annotations

from kandinsky_serve.domain.request import GenerationRequest

_UNIT_PIXELS = 512 * 512
_UNIT_STEPS = 50


def price(request: GenerationRequest, credits_per_unit: float) -> float:
    if request.task.value == "prior":
        work = request.num_images * request.prior_steps / 25 * 0.1  # no decoder: a tenth of an image
    else:
        work = request.num_images * (request.width * request.height / _UNIT_PIXELS) * (request.steps / _UNIT_STEPS)
    return round(work * credits_per_unit, 4)
