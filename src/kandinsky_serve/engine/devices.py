"""Device and dtype choice: CUDA in fp16 (bf16 on request) when there is a GPU, else CPU fp32."""

from __future__ import annotations

import torch

from kandinsky_serve.domain.errors import invalid

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise invalid("device", f"{name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise invalid("device", f"{name} was asked for but this machine has no CUDA GPU; use cpu")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        # half precision on CPU is slow and partly unsupported; fp16 is what the hub weights ship
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise invalid("dtype", f"{name!r} is not offered; choose auto, {', '.join(_DTYPES)}")
    return _DTYPES[name]
