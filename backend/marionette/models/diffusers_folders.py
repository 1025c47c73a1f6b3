"""Released diffusers pipeline folders, checked before anything loads: the index, and per component
its config and its weights (every shard its weight index names), so a bad copy is named by what it
lacks instead of failing deep inside a loader (diffusers only warns about a component that fails
to load). The torch engines' weights modules say which index and components their release has."""

from __future__ import annotations

import json
from pathlib import Path

import torch

# The weight files of a diffusers model and of a transformers model: one of each tuple must be there.
MODEL_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
                 "diffusion_pytorch_model.bin", "diffusion_pytorch_model.bin.index.json")
TRANSFORMERS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                        "pytorch_model.bin.index.json")


def read_index(folder: Path, index_name: str, error, missing_hint: str) -> dict:
    """The folder's pipeline index (model_index.json, modular_model_index.json) as a dict; `error`
    (an exception class) naming what is wrong otherwise."""
    index_path = folder / index_name
    if not index_path.is_file():
        raise error(f"{folder} has no {index_name}: {missing_hint}")
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as failure:
        raise error(f"cannot read {index_path}: {failure}") from None
    if not isinstance(index, dict):
        raise error(f"{index_path} is not a pipeline index (a JSON object)")
    return index


def check_components(folder: Path, index: dict, index_name: str, components: dict, error) -> None:
    """Every component listed in the index, with its config and weights; components maps a name to
    (the config file it must have, the weight files of which one must be there)."""
    for component, (config, weights) in components.items():
        sub = folder / component
        if component not in index:
            raise error(f"{folder / index_name} lists no {component}; the folder is not the released layout")
        if not sub.is_dir():
            raise error(f"the weights folder {folder} has no {component}/ folder (an incomplete copy?)")
        if not (sub / config).is_file():
            raise error(f"the weights folder {folder} has no {component}/{config} (an incomplete copy?)")
        present = [name for name in weights if (sub / name).is_file()]
        if weights and not present:
            raise error(f"the weights folder {folder} has no weights in {component}/ (expected {weights[0]} or "
                        f"{weights[1]})")
        if present and present[0].endswith(".index.json"):
            _check_shards(sub / present[0], error)


def _check_shards(index_path: Path, error) -> None:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as failure:
        raise error(f"cannot read the shard index {index_path}: {failure}") from None
    for shard in sorted(set(weight_map.values())):
        if not (index_path.parent / shard).is_file():
            raise error(f"{index_path.parent} lacks {shard}, one of the shards its index names "
                        "(an incomplete download?)")


def load_released_pipeline(pipeline_class, folder: Path, dtype: torch.dtype, error, name: str):
    """`pipeline_class.from_pretrained` of a checked local folder: every part in `dtype` but the VAE
    (float32, as the releases run it), nothing downloaded, no progress bars; `error` (an exception
    class) naming the model and the loader's own words where a file does not load."""
    try:
        pipe = pipeline_class.from_pretrained(folder, dtype={"default": dtype, "vae": torch.float32},
                                              local_files_only=True)
    except Exception as failure:  # a damaged file or a foreign config: say so, with the loader's own words
        raise error(f"cannot load {name} from {folder}: {type(failure).__name__}: {failure}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


def default_dtype(device: str | torch.device) -> torch.dtype:
    """bfloat16 on an accelerator (what the releases are run in), float32 on the CPU."""
    return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16
