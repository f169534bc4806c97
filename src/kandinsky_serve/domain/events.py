"""Progress of a running generation, as the engine reports it step by step."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Stage(StrEnum):
    PRIOR = "prior"
    DECODER = "decoder"


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    stage: Stage
    step: int  # 1-based: the number of steps of this stage that are done
    total: int
    # now and then in the decoder stage: (request index in the batch, JPEG) of each request's first image
    previews: tuple[tuple[int, bytes], ...] = ()

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 1.0
