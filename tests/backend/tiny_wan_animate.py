"""A tiny Wan-Animate pipeline with random weights, saved in the released diffusers layout, for CPU tests.

Every part has the released architecture (WanAnimateTransformer3DModel, AutoencoderKLWan, UMT5 text
encoder, CLIP vision encoder, UniPC flow scheduler) at toy widths. The tokenizer is a T5 (Unigram)
tokenizer over a small character vocabulary built here, so nothing is downloaded. model_index.json
names the classes as the released Wan2.2-Animate-14B-Diffusers does.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

MOTION_SIZE = 32  # the face crops reach the tiny motion encoder at this size (512 in the release)

TINY_TRANSFORMER = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=36, latent_channels=16,
    out_channels=16, text_dim=32, freq_dim=32, ffn_dim=48, num_layers=2, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", image_dim=16, added_kv_proj_dim=24, rope_max_seq_len=64,
    motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16, "32": 8}, motion_encoder_size=MOTION_SIZE,
    motion_style_dim=16, motion_dim=4, motion_encoder_dim=16, face_encoder_hidden_dim=16, face_encoder_num_heads=2,
    inject_face_latents_blocks=2, motion_encoder_batch_size=4)

# The class names model_index.json of the release gives (saved with transformers 4, whose names
# transformers 5 still resolves).
RELEASED_CLASS_NAMES = {"tokenizer": ["transformers", "T5TokenizerFast"],
                        "image_processor": ["transformers", "CLIPImageProcessor"]}


def tiny_tokenizer():
    """A T5 tokenizer (Unigram, as umT5's) whose pieces are single characters and a few words."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    for word in ("person", "dancing", "walking", "the", "a", "in", "video"):
        pieces.append(("▁" + word, -3.0))
    for character in string.ascii_lowercase + string.ascii_uppercase + string.digits + ".,!?'-":
        pieces += [(character, -5.0), ("▁" + character, -5.5)]
    pieces += [(f"<extra_id_{i}>", 0.0) for i in range(3, -1, -1)]
    return T5Tokenizer(vocab=pieces, extra_ids=4)


def tiny_text_encoder(tokenizer):
    """umT5's encoder at toy width (the Wan releases' text encoder)."""
    from transformers import UMT5Config, UMT5EncoderModel

    return UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16))


def tiny_vae():
    """Wan's causal video VAE at toy width, 16 latent channels as released."""
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True])


def tiny_components(seed: int = 0) -> dict:
    from diffusers import UniPCMultistepScheduler, WanAnimateTransformer3DModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text_encoder = tiny_text_encoder(tokenizer)
    image_encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2, image_size=32, patch_size=8))
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    vae = tiny_vae()
    transformer = WanAnimateTransformer3DModel(**TINY_TRANSFORMER)
    # As the release: UniPC, flow prediction, flow shift 5.
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=5.0)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # zero-initialised parts (padding tokens, ...) get weights too, so every input matters
        for module, amount in ((transformer, 0.1), (text_encoder, 0.05), (image_encoder, 0.05), (vae, 0.02)):
            for parameter in module.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator) * amount)
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, image_encoder=image_encoder,
                image_processor=image_processor, vae=vae, transformer=transformer, scheduler=scheduler)


def save_tiny_release(folder: Path | str, seed: int = 0, shard_transformer: bool = True) -> Path:
    """Write a tiny pipeline in the released diffusers layout; the transformer in shards (with its
    index file) as the release ships it."""
    from diffusers import WanAnimatePipeline

    folder = Path(folder)
    components = tiny_components(seed)
    pipe = WanAnimatePipeline(**components)
    pipe.save_pretrained(folder, safe_serialization=True)
    if shard_transformer:
        for path in (folder / "transformer").glob("diffusion_pytorch_model*"):
            path.unlink()
        components["transformer"].save_pretrained(folder / "transformer", safe_serialization=True,
                                                  max_shard_size="100KB")
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index.update(RELEASED_CLASS_NAMES)
    index_path.write_text(json.dumps(index, indent=2))
    return folder
