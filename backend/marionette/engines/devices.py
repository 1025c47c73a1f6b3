"""Device and dtype settings shared by the torch engines."""

from __future__ import annotations

import torch

from .base import EngineError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_and_dtype(settings: dict, cuda_default: str | None = "float16") -> tuple[str, torch.dtype | None]:
    """The device and dtype a job's `device` and `dtype` settings ask for. Without a dtype: float32
    on the CPU, `cuda_default` on CUDA (None leaves the choice to the engine's loader)."""
    device = settings.get("device") or default_device()
    name = settings.get("dtype") or (cuda_default if device.startswith("cuda") else "float32")
    if name is None:
        return device, None
    if name not in DTYPES:
        raise EngineError(f"unknown dtype '{name}'; use one of {', '.join(DTYPES)}")
    return device, DTYPES[name]
