"""Loading Wan2.1-VACE from the user's local copy of a released diffusers folder.

    Wan2.1-VACE-1.3B-diffusers/        (or Wan2.1-VACE-14B-diffusers)
        model_index.json      _class_name "WanVACEPipeline"
        transformer/          WanVACETransformer3DModel (config.json + safetensors, sharded or not)
        vae/                  AutoencoderKLWan
        text_encoder/         UMT5EncoderModel (umT5-XXL encoder)
        tokenizer/            umT5's tokenizer
        scheduler/            UniPCMultistepScheduler (flow prediction; its shift as released)

Which model the folder holds is read from the transformer's config (1.3B: 1536 wide, 30 blocks; 14B:
5120 wide, 40 blocks). The folder is checked first, every file the load needs, so a partial copy
fails at once with the missing file named. Nothing is downloaded: every load is local_files_only.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import WanVACEPipeline

from ...models.diffusers_folders import (MODEL_WEIGHTS, TRANSFORMERS_WEIGHTS, check_components, default_dtype,
                                         load_released_pipeline, read_index)
from ...models.placement import check_placement, place_pipeline
from ..base import EngineError

INDEX = "model_index.json"
PIPELINE_CLASS = "WanVACEPipeline"
SIZES = {1536: "1.3B", 5120: "14B"}  # the transformer's width -> the released model

COMPONENTS = {
    "transformer": ("config.json", MODEL_WEIGHTS),
    "vae": ("config.json", MODEL_WEIGHTS),
    "text_encoder": ("config.json", TRANSFORMERS_WEIGHTS),
    "tokenizer": ("tokenizer_config.json", ("tokenizer.json", "spiece.model")),
    "scheduler": ("scheduler_config.json", ()),
}


class WanVaceError(EngineError):
    """A wan-vace job or weights folder that cannot be used; the message names the cause and the fix."""


def check_weights_folder(folder: Path | str) -> str:
    """The model the folder holds ("1.3B", "14B", or its width for another); WanVaceError naming the
    first thing missing otherwise."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise WanVaceError(f"the Wan-VACE weights folder {folder} does not exist; give the folder of your local copy "
                           "of Wan2.1-VACE-1.3B-diffusers or Wan2.1-VACE-14B-diffusers")
    index = read_index(folder, INDEX, WanVaceError, "it is not a diffusers pipeline folder; give the folder of "
                       "Wan2.1-VACE-1.3B-diffusers or -14B-diffusers (the diffusers release)")
    if index.get("_class_name") != PIPELINE_CLASS:
        raise WanVaceError(f"{folder / INDEX} is for {index.get('_class_name')!r}, not {PIPELINE_CLASS!r}: this folder "
                           "holds another model")
    check_components(folder, index, INDEX, COMPONENTS, WanVaceError)
    try:
        config = json.loads((folder / "transformer" / "config.json").read_text())
        width = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise WanVaceError(f"cannot read {folder / 'transformer' / 'config.json'}: {error}") from None
    return SIZES.get(width, f"{width}-wide")


def load_pipeline(folder: Path | str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                  offload: str = "none", transformer_weights: str = "dtype"):
    """A WanVACEPipeline from a local released folder, ready on `device`. dtype: of every part but the
    VAE, which stays float32 (default: bfloat16 on an accelerator, float32 on the CPU). offload and
    transformer_weights: where the parts live and how the transformer's weights are stored
    (models/placement.py)."""
    device = torch.device(device)
    check_placement(offload, transformer_weights, device, WanVaceError)
    folder = Path(folder).expanduser()
    check_weights_folder(folder)
    dtype = dtype or default_dtype(device)
    pipe = load_released_pipeline(WanVACEPipeline, folder, dtype, WanVaceError, "Wan-VACE")
    place_pipeline(pipe, device, dtype, offload, transformer_weights)
    return pipe
