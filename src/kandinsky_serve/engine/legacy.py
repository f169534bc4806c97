"""The loops from before issue 12, for prior and decoder: diffusers' scheduler `step()` per step.

Kept as the reference that the capture-safe steps (engine.steps, engine.prior_step) are checked
against, bit for bit in float32 (tests), and measured against (`bench engine --profile`,
benchmarks/gpu_check.py). Nothing serves through them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

_active = False


@contextmanager
def loops() -> Iterator[None]:
    """Within: prior and decoder run through the old loops."""
    global _active
    before, _active = _active, True
    try:
        yield
    finally:
        _active = before


def active() -> bool:
    return _active
