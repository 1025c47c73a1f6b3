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
                                         read_index)
from ..base import EngineError

INDEX = "model_index.json"
PIPELINE_CLASS = "WanAnimatePipeline"
OFFLOAD_MODES = (None, "model", "group")
GROUP_LEVELS = ("block", "leaf")

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


def check_offload(offload: str | None, device: torch.device, group_level: str = "block",
                  blocks_per_group: int = 1) -> None:
    if offload not in OFFLOAD_MODES:
        raise WanAnimateError(f"unknown offload {offload!r}; use none, 'model' or 'group'")
    if offload == "model" and device.type == "cpu":
        raise WanAnimateError("offload 'model' moves each model onto an accelerator in turn; on the CPU there is "
                              "nothing to offload to: use no offload")
    if offload == "group":
        if group_level not in GROUP_LEVELS:
            raise WanAnimateError(f"unknown group offload level {group_level!r}; use 'block' or 'leaf'")
        if group_level == "block" and (not isinstance(blocks_per_group, int) or blocks_per_group < 1):
            raise WanAnimateError(f"blocks per group must be a whole number of at least 1, not {blocks_per_group!r}")


def load_pipeline(folder: Path | str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                  offload: str | None = None, *, group_level: str = "block", blocks_per_group: int = 1):
    """A WanAnimatePipeline from a local Wan2.2-Animate-14B-Diffusers folder, ready on `device`.

    dtype: of every part but the VAE, which is float32 as the release recommends (default: bfloat16
    on an accelerator, float32 on the CPU).
    offload: None keeps every part on `device` (the 14B transformer alone is about 34 GB in bfloat16);
    "model" keeps the parts in CPU memory and moves each onto `device` while it runs (diffusers'
    enable_model_cpu_offload; needs an accelerator); "group" moves groups of layers (group_level
    "block": `blocks_per_group` transformer blocks at a time, "leaf": each layer) onto `device` as
    they run, overlapping the transfer with compute on CUDA (diffusers' group-offloading hooks).
    Raises WanAnimateError naming the cause, before loading any weights where the folder is at fault.
    """
    device = torch.device(device)
    check_offload(offload, device, group_level, blocks_per_group)
    folder = check_weights_folder(folder)
    dtype = dtype or default_dtype(device)
    try:
        pipe = WanAnimatePipeline.from_pretrained(folder, dtype={"default": dtype, "vae": torch.float32},
                                                  local_files_only=True)
    except Exception as error:  # a damaged file or a foreign config: say so, with the loader's own words
        raise WanAnimateError(f"cannot load Wan-Animate from {folder}: {type(error).__name__}: {error}") from None
    pipe.set_progress_bar_config(disable=True)
    if offload is None:
        pipe.to(device)
    elif offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.enable_group_offload(
            onload_device=device, offload_device=torch.device("cpu"), offload_type=f"{group_level}_level",
            num_blocks_per_group=blocks_per_group if group_level == "block" else None,
            use_stream=device.type == "cuda")
    return pipe
