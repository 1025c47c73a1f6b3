"""Loading Wan-Animate-2 (base or distilled) from the user's local copy of a released diffusers folder.

    Wan2.2-Animate-2-14B-Diffusers/        (or the distilled release)
        modular_model_index.json   _class_name WanAnimate2ModularPipeline (base) or
                                   WanAnimate2DistilledModularPipeline (distilled); every component's
                                   loading spec (a copy keeps the Hub's, diffusers loads the local files)
        transformer/               WanAnimate2Transformer3DModel (config.json + safetensors shards, index)
        vae/                       AutoencoderKLWan
        text_encoder/              UMT5EncoderModel (umT5-XXL encoder)
        tokenizer/                 umT5's tokenizer
        image_encoder/             CLIPVisionModel (ViT-H/14)
        scheduler/                 the sampler the release runs with (read from the folder, not assumed)

The folder is checked first, every file the load needs, so a partial copy fails at once with the
missing file named; diffusers' `load_components` only warns about a part it cannot load, so every
part is checked again after loading. Nothing is downloaded: every load is local_files_only.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import ModularPipeline
from diffusers.guiders import ClassifierFreeGuidance
from diffusers.modular_pipelines import ComponentsManager

from ...models.diffusers_folders import (MODEL_WEIGHTS, TRANSFORMERS_WEIGHTS, check_components, default_dtype,
                                         read_index)
from ..base import EngineError

INDEX = "modular_model_index.json"
VARIANTS = {"WanAnimate2ModularPipeline": "base", "WanAnimate2DistilledModularPipeline": "distilled"}
OFFLOAD_MODES = ("none", "model", "group")

# component -> (the config it must have, the files of which one must be there)
COMPONENTS = {
    "transformer": ("config.json", MODEL_WEIGHTS),
    "vae": ("config.json", MODEL_WEIGHTS),
    "text_encoder": ("config.json", TRANSFORMERS_WEIGHTS),
    "tokenizer": ("tokenizer_config.json", ("tokenizer.json", "spiece.model")),
    "image_encoder": ("config.json", TRANSFORMERS_WEIGHTS),
    "scheduler": ("scheduler_config.json", ()),
}


class WanAnimate2Error(EngineError):
    """A wan-animate-2 job or weights folder that cannot be used; the message names the cause and the fix."""


def check_weights_folder(folder: Path | str) -> str:
    """The released variant the folder holds ("base" or "distilled"); WanAnimate2Error naming the first
    thing missing otherwise."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise WanAnimate2Error(f"the Wan-Animate-2 weights folder {folder} does not exist; give the folder of your "
                               "local copy of Wan2.2-Animate-2-14B-Diffusers (or its distilled release)")
    index = read_index(folder, INDEX, WanAnimate2Error, "it is not a Wan-Animate-2 release in the diffusers "
                       "layout; give the folder of Wan2.2-Animate-2-14B-Diffusers")
    class_name = index.get("_class_name")
    if class_name not in VARIANTS:
        raise WanAnimate2Error(f"{folder / INDEX} is for {class_name!r}, not Wan-Animate-2 ({' or '.join(VARIANTS)}): "
                               "this folder holds another model")
    check_components(folder, index, INDEX, COMPONENTS, WanAnimate2Error)
    return VARIANTS[class_name]


def load_pipeline(folder: Path | str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                  offload: str = "none", compile_blocks: bool = False):
    """A Wan-Animate-2 modular pipeline (base or distilled, as the folder says) ready on `device`.

    dtype: of every part but the VAE, which stays float32 (default: bfloat16 on an accelerator,
    float32 on the CPU). offload: "none" keeps every part on `device`; "model" keeps the parts in CPU
    memory and moves each onto `device` while it runs (diffusers' ComponentsManager); "group" streams
    the transformer's blocks onto `device` as they run. compile_blocks: compile the transformer's
    repeated blocks (its flex attention needs it on CUDA)."""
    device = torch.device(device)
    if offload not in OFFLOAD_MODES:
        raise WanAnimate2Error(f"unknown offload {offload!r}; use none, model or group")
    if offload != "none" and device.type == "cpu":
        raise WanAnimate2Error(f"offload '{offload}' moves parts onto an accelerator; on the CPU use no offload")
    folder = Path(folder).expanduser()
    check_weights_folder(folder)
    dtype = dtype or default_dtype(device)
    manager = ComponentsManager() if offload == "model" else None
    try:
        pipe = ModularPipeline.from_pretrained(str(folder), components_manager=manager)
        pipe.load_components(dtype={"default": dtype, "vae": torch.float32}, local_files_only=True)
    except Exception as error:  # a damaged file or a foreign config: say so, with the loader's own words
        raise WanAnimate2Error(f"cannot load Wan-Animate-2 from {folder}: {type(error).__name__}: {error}") from None
    missing = [name for name in COMPONENTS if getattr(pipe, name, None) is None]
    if missing:  # load_components only warns about a part it could not load
        raise WanAnimate2Error(f"cannot load {', '.join(missing)} from {folder}: the files are there but do not "
                               f"load (a damaged or foreign copy?)")
    if offload == "none":
        pipe.to(device)
    elif offload == "model":
        manager.enable_auto_cpu_offload(device=device)
    else:
        pipe.transformer.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                              offload_type="block_level", num_blocks_per_group=1,
                                              use_stream=device.type == "cuda")
        for name in ("vae", "text_encoder", "image_encoder"):
            getattr(pipe, name).to(device)
    if compile_blocks:
        pipe.transformer.compile_repeated_blocks(fullgraph=True)
    return pipe


def set_guidance(pipe, variant: str, guidance: float) -> None:
    """The base model's classifier-free guidance is the pipeline's guider component; the distilled
    model has none (its guider is pinned to 1.0)."""
    if variant == "distilled":
        if guidance != 1.0:
            raise WanAnimate2Error(f"the distilled Wan-Animate-2 samples without guidance; its guidance is 1.0, not "
                                   f"{guidance:g}")
        return
    pipe.update_components(guider=ClassifierFreeGuidance(guidance_scale=guidance))
