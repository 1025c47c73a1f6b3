"""Tiny AnimateAnyone networks with random weights, in the real architecture, for CPU tests."""

from __future__ import annotations

import torch

TINY_UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 32, 64, 64],
    "layers_per_block": 1,
    "attention_head_dim": 4,
    "cross_attention_dim": 16,
    "norm_num_groups": 32,
}


# AniPortrait's guider needs UNet widths C, 2C, 4C, 4C.
TINY_ANIPORTRAIT_CONFIG = {**TINY_UNET_CONFIG, "block_out_channels": [32, 64, 128, 128]}

# diffusers AutoencoderKL and transformers CLIPVisionConfig arguments (the goldens' scripts build the
# same ones in the originals' environment).
TINY_VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=(32, 32, 32, 32), layers_per_block=1,
                latent_channels=4, norm_num_groups=32, sample_size=64)


def tiny_clip(projection_dim: int) -> dict:
    return dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=224,
                patch_size=32, projection_dim=projection_dim)


def tiny_networks(seed: int = 0, unet_config: dict | None = None, guider: str = "animate-anyone",
                  guider_inner_dim: int | None = 32):
    """Every network of the engine at toy size; all weights random (zero-initialised layers too, so
    that every part changes the output). AniPortrait's guider gets transformers of
    `guider_inner_dim` channels (None: the release's 16 heads of 88)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from marionette.engines.animate_anyone.models import Networks, build_aniportrait_pose_guider
    from marionette.models.unets import build_denoising_unet, build_pose_guider, build_reference_unet, ddim_scheduler

    torch.manual_seed(seed)
    config = dict(unet_config or (TINY_ANIPORTRAIT_CONFIG if guider == "aniportrait" else TINY_UNET_CONFIG))
    vae = AutoencoderKL(**TINY_VAE)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**tiny_clip(config["cross_attention_dim"])))
    pose_guider = build_aniportrait_pose_guider(config, inner_dim=guider_inner_dim) if guider == "aniportrait" \
        else build_pose_guider(config)
    networks = Networks(vae, encoder, build_reference_unet(config), build_denoising_unet(config), pose_guider,
                        ddim_scheduler())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in (networks.reference_unet, networks.denoising_unet, networks.pose_guider):
            for parameter in module.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
            for name, buffer in module.named_buffers():  # BatchNorm statistics as a trained model has
                if name.endswith("running_var"):
                    buffer.uniform_(0.5, 1.5, generator=generator)
                elif name.endswith("running_mean"):
                    buffer.normal_(0.0, 0.1, generator=generator)
    return networks.to(torch.device("cpu"), torch.float32), config
