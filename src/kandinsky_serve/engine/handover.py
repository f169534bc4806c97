"""How every WeightsSource hands a module over: on the asked device and dtype, in eval mode, frozen."""

from __future__ import annotations

from typing import TypeVar

import torch

from kandinsky_serve.domain.errors import ErrorCode, ServeError
from kandinsky_serve.engine.sources import Family, UNetKind

M = TypeVar("M", bound=torch.nn.Module)


def hand_over(module: M, device: torch.device | str, dtype: torch.dtype) -> M:
    module = module.to(device)
    if any(p.dtype != dtype for p in module.parameters()):
        # nn.Module.to, not the diffusers override: diffusers 0.42 warns "modules ... should be kept in
        # float32: []" on every dtype cast, even for models with no such module (all Kandinsky ones).
        torch.nn.Module.to(module, dtype=dtype)
    module.eval()
    module.requires_grad_(False)
    return module


def no_decoder_text(family: Family) -> ServeError:
    return ServeError(
        ErrorCode.MODEL_UNAVAILABLE,
        f"Kandinsky {family.value} has no decoder text encoder; only 2.1 conditions its decoder on the prompt.",
    )


def no_unet(family: Family, kind: UNetKind) -> ServeError:
    return ServeError(ErrorCode.MODEL_UNAVAILABLE, f"Kandinsky {family.value} has no {kind.value} decoder checkpoint.")
