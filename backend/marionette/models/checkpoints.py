"""Reading released checkpoints: pickled .pth files (weights_only) or their .safetensors twins,
strict loading that names what does not match, and the AnimateDiff motion-module key mapping.

Nothing here downloads anything; a missing or damaged file is an error naming it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..engines.base import EngineError

CHECKPOINT_SUFFIXES = (".pth", ".pt")

# Original AnimateDiff motion-module names -> diffusers names (the rules of diffusers' own converter).
_MOTION_RENAMES = (
    (".temporal_transformer", ""),
    (".attention_blocks.0", ".attn1"),
    (".attention_blocks.1", ".attn2"),
    (".norms.0", ".norm1"),
    (".norms.1", ".norm2"),
    (".ff_norm", ".norm3"),
)


class WeightsError(EngineError):
    """A weights folder that cannot be used; the message names the file."""


def motion_module_to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    converted = {}
    for key, value in state.items():
        if "pos_encoder" in key:
            continue  # diffusers computes the same sinusoidal table itself
        for old, new in _MOTION_RENAMES:
            key = key.replace(old, new)
        converted[key] = value
    return converted


def motion_module_from_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse mapping (to write the release layout, e.g. for tests and benchmarks)."""
    converted = {}
    for key, value in state.items():
        if "motion_modules" not in key or key.endswith(".pe"):
            continue
        key = re.sub(r"(motion_modules\.\d+)\.", r"\1.temporal_transformer.", key)
        for old, new in reversed(_MOTION_RENAMES[1:]):
            key = key.replace(new + ".", old + ".")
        converted[key] = value
    return converted


def find_checkpoint(folder: Path, stem: str) -> Path | None:
    """The checkpoint `stem` in folder: its .safetensors twin if there is one, else the .pth."""
    for suffix in (".safetensors", ".pth"):
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def checkpoint_path(folder: Path, stem: str) -> Path:
    path = find_checkpoint(folder, stem)
    if path is None:
        raise WeightsError(f"the weights folder {folder} has no {stem}.pth (or {stem}.safetensors)")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which one
        raise WeightsError(f"cannot read {path}: {error}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict")
    return state


def load_strict(module: torch.nn.Module, state: dict, source: str, ignore_missing=lambda key: False) -> None:
    """Load state into module; WeightsError naming `source` unless the keys and shapes match exactly
    (keys for which ignore_missing is true may be absent)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not ignore_missing(k)]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or mismatched:
        details = []
        if missing:
            details.append(f"missing {len(missing)} keys (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if mismatched:
            key = mismatched[0]
            details.append(f"{len(mismatched)} keys of another shape (e.g. {key}: {tuple(state[key].shape)} "
                           f"vs {tuple(expected[key].shape)} from the unet config)")
        raise WeightsError(f"{source} does not match the model: {'; '.join(details)}")
    module.load_state_dict(state, strict=False)


def own_memory(module: torch.nn.Module) -> None:
    """Copy weights that from_pretrained left in the file's memory map: mapped tensors can sit at
    unaligned addresses, where CPU kernels take other paths and results differ in the last bit."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.data = parameter.data.clone()


def read_unet_config(folder: Path, relative: Path) -> dict:
    path = folder / relative
    if not path.is_file():
        raise WeightsError(f"the weights folder {folder} has no {relative}")
    return json.loads(path.read_text())


def tensor_state(path: Path) -> dict[str, torch.Tensor] | None:
    """The flat state dict of tensors a .pth/.pt file holds (directly or under "state_dict"), read
    with weights_only=True; None for a file that holds something else (a Whisper checkpoint with its
    dims, say) or cannot be read that way."""
    try:
        state = read_state_dict(path)
    except WeightsError:
        return None
    if not state or not all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()):
        return None
    return state


def convert_to_safetensors(folder: Path | str) -> tuple[list[Path], list[Path]]:
    """A .safetensors twin beside each .pth/.pt checkpoint of `folder` that holds a state dict of
    tensors (read with weights_only=True); the engines read a twin in place of its .pth, without
    pickle. Returns (written twins, files left as they are)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(f"the weights folder {folder} does not exist")
    written, skipped = [], []
    for source in sorted(p for p in folder.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file()):
        state = tensor_state(source)
        if state is None:
            skipped.append(source)
            continue
        # Own, contiguous copies: safetensors refuses tensors that share memory.
        target = source.with_suffix(".safetensors")
        temporary = target.with_name(f".{target.name}.part")
        save_file({key: value.contiguous().clone() for key, value in state.items()}, str(temporary))
        temporary.replace(target)
        written.append(target)
    if not written:
        raise WeightsError(f"{folder} holds no .pth or .pt checkpoint of tensors to convert")
    return written, skipped
