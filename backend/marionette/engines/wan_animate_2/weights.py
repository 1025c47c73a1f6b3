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
from ...models.placement import check_placement, place_pipeline
from ..base import EngineError

INDEX = "modular_model_index.json"
VARIANTS = {"WanAnimate2ModularPipeline": "base", "WanAnimate2DistilledModularPipeline": "distilled"}

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
                  offload: str = "none", compile_blocks: bool = False, transformer_weights: str = "dtype"):
    """A Wan-Animate-2 modular pipeline (base or distilled, as the folder says) ready on `device`.

    dtype: of every part but the VAE, which stays float32 (default: bfloat16 on an accelerator,
    float32 on the CPU). offload and transformer_weights: where the parts live and how the
    transformer's weights are stored (models/placement.py; "model" offload through diffusers'
    ComponentsManager). compile_blocks: compile the transformer's repeated blocks (its flex attention
    needs it on CUDA)."""
    device = torch.device(device)
    check_placement(offload, transformer_weights, device, WanAnimate2Error)
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
    place_pipeline(pipe, device, dtype, offload, transformer_weights,
                   move_models_in_turn=manager.enable_auto_cpu_offload if manager else None)
    if compile_blocks:
        compile_transformer_blocks(pipe, offload, transformer_weights)
    return pipe


def compile_transformer_blocks(pipe, offload: str = "none", transformer_weights: str = "dtype") -> None:
    """Compile the transformer's repeated blocks (one compilation serves all 40). Whole graphs where
    nothing else hooks the blocks; with group offload or float8 casting their hooks may break a graph,
    so those parts run eagerly around compiled pieces."""
    plain = offload == "none" and transformer_weights == "dtype"
    pipe.transformer.compile_repeated_blocks(fullgraph=plain)


def set_guidance(pipe, variant: str, guidance: float) -> None:
    """The base model's classifier-free guidance is the pipeline's guider component; the distilled
    model has none (its guider is pinned to 1.0)."""
    if variant == "distilled":
        if guidance != 1.0:
            raise WanAnimate2Error(f"the distilled Wan-Animate-2 samples without guidance; its guidance is 1.0, not "
                                   f"{guidance:g}")
        return
    pipe.update_components(guider=ClassifierFreeGuidance(guidance_scale=guidance))
