"""A tiny Wan-VACE pipeline with random weights, saved in the released diffusers layout, for CPU tests.

Every part has the released architecture (WanVACETransformer3DModel with its VACE blocks,
AutoencoderKLWan, UMT5 text encoder, UniPC flow scheduler) at toy widths, sharing the tokenizer, text
encoder and VAE of the tiny Wan-Animate release. model_index.json names the classes as the released
Wan2.1-VACE-1.3B-diffusers does.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tiny_wan_animate import tiny_text_encoder, tiny_tokenizer, tiny_vae

TINY_TRANSFORMER = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
    text_dim=32, freq_dim=32, ffn_dim=48, num_layers=3, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    rope_max_seq_len=64, vace_layers=[0, 2], vace_in_channels=96)


def tiny_pipeline(seed: int = 0):
    from diffusers import UniPCMultistepScheduler, WanVACEPipeline, WanVACETransformer3DModel

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text_encoder = tiny_text_encoder(tokenizer)
    vae = tiny_vae()
    transformer = WanVACETransformer3DModel(**TINY_TRANSFORMER)
    # As the 1.3B release: UniPC, flow prediction, flow shift 3.
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=3.0)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # zero-initialised parts (the VACE blocks' outputs, ...) get weights too
        for module, amount in ((transformer, 0.1), (text_encoder, 0.05), (vae, 0.02)):
            for parameter in module.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator) * amount)
    return WanVACEPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                           scheduler=scheduler)


def save_tiny_release(folder: Path | str, seed: int = 0) -> Path:
    folder = Path(folder)
    tiny_pipeline(seed).save_pretrained(folder, safe_serialization=True)
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["tokenizer"] = ["transformers", "T5TokenizerFast"]  # as the release names it
    index_path.write_text(json.dumps(index, indent=2))
    return folder
