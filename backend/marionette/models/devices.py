"""The device and dtype a job's settings ask for, shared by the torch engines."""

from __future__ import annotations

import torch

from ..engines.base import EngineError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> str:
    """`device` if this backend can run on it; EngineError naming the cause otherwise (checked at
    submit, so a job for a GPU this machine lacks is refused before it is stored)."""
    kind = device.split(":", 1)[0]
    if kind == "cpu":
        return device
    if kind != "cuda":
        raise EngineError(f"unknown device '{device}'; use cuda or cpu")
    if not torch.cuda.is_available():
        built = "a CPU-only build of torch" if torch.version.cuda is None else "no CUDA device visible"
        raise EngineError(f"the job asks for device '{device}', but this backend has no CUDA ({built}); "
                          f"use device cpu, or run the backend on a GPU machine")
    index = device.split(":", 1)[1] if ":" in device else "0"
    if not index.isdigit() or int(index) >= torch.cuda.device_count():
        raise EngineError(f"the job asks for device '{device}', but this backend has "
                          f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def device_and_dtype(settings: dict, cuda_default: str | None = "float16") -> tuple[str, torch.dtype | None]:
    """The device and dtype a job's `device` and `dtype` settings ask for, the device checked. Without
    a dtype: float32 on the CPU, `cuda_default` on CUDA (None leaves the choice to the engine's loader)."""
    device = check_device(settings.get("device") or default_device())
    name = settings.get("dtype") or (cuda_default if device.startswith("cuda") else "float32")
    if name is None:
        return device, None
    if name not in DTYPES:
        raise EngineError(f"unknown dtype '{name}'; use one of {', '.join(DTYPES)}")
    return device, DTYPES[name]


# The settings every torch engine declares for them.
DEVICE_SETTINGS = {
    "device": {"type": "str", "default": None, "help": "cuda or cpu (default: cuda when present)"},
    "dtype": {"type": "str", "default": None, "help": "float16, bfloat16 or float32"},
}
