"""The weights sources that need no download: tiny random models and full-size random-weight models."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kandinsky_serve.engine.random_weights import RandomSource
from kandinsky_serve.engine.tiny import TinySource, save_tiny_folder

if TYPE_CHECKING:  # mypy proves every source implements the protocol
    from kandinsky_serve.engine.hub import HubSource
    from kandinsky_serve.engine.sources import WeightsSource

    def _conforms(tiny: TinySource, random: RandomSource, hub: HubSource) -> tuple[WeightsSource, ...]:
        return tiny, random, hub


__all__ = ["RandomSource", "TinySource", "save_tiny_folder"]
