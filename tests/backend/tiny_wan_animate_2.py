"""A tiny Wan-Animate-2 release with random weights, in the released diffusers layout, for CPU tests.

Every part has the released architecture (WanAnimate2Transformer3DModel, AutoencoderKLWan, UMT5 text
encoder, CLIP vision encoder with the 1280-wide hidden states the transformer's image projection
takes) at toy widths; the scheduler is a flow DPM-Solver++. `modular_model_index.json` names the
pipeline class (base or distilled) and points its components at the Hub repository, as a local copy
of the release does, so loading it proves a local copy loads without the Hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tiny_wan_animate import tiny_text_encoder, tiny_tokenizer, tiny_vae

HUB_REPOSITORY = {"base": "Wan-AI/Wan2.2-Animate-2-14B-Diffusers",
                  "distilled": "Wan-AI/Wan2.2-Animate-2-14B-Distilled-Diffusers"}
TINY_TRANSFORMER = dict(dim=24, ffn_dim=48, freq_dim=32, text_dim=32, num_heads=2, num_layers=2)


def tiny_components(seed: int = 0) -> dict:
    from diffusers import DPMSolverMultistepScheduler
    from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2Transformer3DModel
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text_encoder = tiny_text_encoder(tokenizer)
    image_encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=1280, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=224,
        patch_size=32))
    vae = tiny_vae()
    transformer = WanAnimate2Transformer3DModel(**TINY_TRANSFORMER)
    scheduler = DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0,
                                            num_train_timesteps=1000)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # zero-initialised parts get weights too, so every input matters
        for module, amount in ((transformer, 0.1), (text_encoder, 0.05), (image_encoder, 0.02), (vae, 0.02)):
            for parameter in module.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator) * amount)
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, image_encoder=image_encoder, vae=vae,
                transformer=transformer, scheduler=scheduler)


def save_tiny_release(folder: Path | str, variant: str = "base", seed: int = 0) -> Path:
    """Write a tiny release (variant "base" or "distilled"); the transformer in shards with their index."""
    from diffusers.modular_pipelines import WanAnimate2Blocks, WanAnimate2DistilledBlocks

    folder = Path(folder)
    blocks = WanAnimate2Blocks() if variant == "base" else WanAnimate2DistilledBlocks()
    pipe = blocks.init_pipeline()
    components = tiny_components(seed)
    pipe.update_components(**components)
    pipe.save_pretrained(str(folder), overwrite_modular_index=True)
    for path in (folder / "transformer").glob("diffusion_pytorch_model*"):
        path.unlink()
    components["transformer"].save_pretrained(folder / "transformer", safe_serialization=True, max_shard_size="20KB")
    index_path = folder / "modular_model_index.json"
    index = json.loads(index_path.read_text())
    for value in index.values():  # the Hub's index names the repository, not this folder
        if isinstance(value, list) and len(value) == 3 and isinstance(value[2], dict):
            value[2]["pretrained_model_name_or_path"] = HUB_REPOSITORY[variant]
    index_path.write_text(json.dumps(index, indent=2))
    return folder
