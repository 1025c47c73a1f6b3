"""Loading Wan2.2-Animate-14B from the user's local copy of the released diffusers folder.

    Wan2.2-Animate-14B-Diffusers/
        model_index.json      _class_name "WanAnimatePipeline"
        transformer/          WanAnimateTransformer3DModel (config.json + sharded safetensors and index)
        vae/                  AutoencoderKLWan
        text_encoder/         UMT5EncoderModel (umT5-XXL encoder)
        tokenizer/            umT5's tokenizer
        image_encoder/        CLIPVisionModel (ViT-H/14)
        image_processor/      CLIPImageProcessor
        scheduler/            UniPCMultistepScheduler (flow prediction, flow shift 5)

The folder is checked first (every file the load needs, shards included), so a partial copy fails in
a second with the missing file named instead of after minutes of loading. Nothing is ever downloaded:
every from_pretrained call is local_files_only.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import WanAnimatePipeline

from ...models.diffusers_folders import (MODEL_WEIGHTS, TRANSFORMERS_WEIGHTS, check_components, default_dtype,
                                         load_released_pipeline, read_index)
from ...models.placement import check_placement, place_pipeline
from ..base import EngineError

INDEX = "model_index.json"
PIPELINE_CLASS = "WanAnimatePipeline"

# component -> (the config it must have, the files of which one must be there)
COMPONENTS = {
    "transformer": ("config.json", MODEL_WEIGHTS),
    "vae": ("config.json", MODEL_WEIGHTS),
    "text_encoder": ("config.json", TRANSFORMERS_WEIGHTS),
    "image_encoder": ("config.json", TRANSFORMERS_WEIGHTS),
    "tokenizer": ("tokenizer_config.json", ("tokenizer.json", "spiece.model")),
    "image_processor": ("preprocessor_config.json", ()),
    "scheduler": ("scheduler_config.json", ()),
}


class WanAnimateError(EngineError):
    """A wan-animate job or weights folder that cannot be used; the message names the cause and the fix."""


def check_weights_folder(folder: Path | str) -> Path:
    """Raise WanAnimateError naming the first thing missing from a released-layout folder."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise WanAnimateError(f"the Wan-Animate weights folder {folder} does not exist; give the folder of your "
                              "local copy of Wan2.2-Animate-14B-Diffusers")
    index = read_index(folder, INDEX, WanAnimateError, "it is not a diffusers pipeline folder; give the folder of "
                       "Wan2.2-Animate-14B-Diffusers (the diffusers release, not the original Wan2.2-Animate-14B "
                       "checkpoints)")
    class_name = index.get("_class_name")
    if class_name != PIPELINE_CLASS:
        raise WanAnimateError(f"{folder / INDEX} is for {class_name!r}, not {PIPELINE_CLASS!r}: this folder holds "
                              "another model; give the folder of Wan2.2-Animate-14B-Diffusers")
    check_components(folder, index, INDEX, COMPONENTS, WanAnimateError)
    return folder


def load_pipeline(folder: Path | str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                  offload: str = "none", transformer_weights: str = "dtype"):
    """A WanAnimatePipeline from a local Wan2.2-Animate-14B-Diffusers folder, ready on `device`.

    dtype: of every part but the VAE, which is float32 as the release recommends (default: bfloat16
    on an accelerator, float32 on the CPU). offload and transformer_weights: where the parts live and
    how the transformer's weights are stored (models/placement.py; the 14B transformer alone is about
    33 GB in bfloat16). Raises WanAnimateError naming the cause, before loading any weights where the
    folder or a setting is at fault.
    """
    device = torch.device(device)
    check_placement(offload, transformer_weights, device, WanAnimateError)
    folder = check_weights_folder(folder)
    dtype = dtype or default_dtype(device)
    pipe = load_released_pipeline(WanAnimatePipeline, folder, dtype, WanAnimateError, "Wan-Animate")
    place_pipeline(pipe, device, dtype, offload, transformer_weights)
    return pipe
