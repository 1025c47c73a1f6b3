"""The networks of the animate-anyone and aniportrait engines: Moore-AnimateAnyone's set on the
shared UNets (marionette.models), and AniPortrait's own pose guider, module for module as released.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, DDIMScheduler, Transformer2DModel, UNet2DConditionModel, UNetMotionModel
from torch import nn
from torch.nn import functional as F
from transformers import CLIPVisionModelWithProjection

GUIDERS = ("animate-anyone", "aniportrait")  # Moore-AnimateAnyone's pose guider, or AniPortrait's


@dataclass
class Networks:
    vae: AutoencoderKL
    image_encoder: CLIPVisionModelWithProjection
    reference_unet: UNet2DConditionModel
    denoising_unet: UNetMotionModel
    pose_guider: nn.Module
    scheduler: DDIMScheduler

    def to(self, device: torch.device, dtype: torch.dtype) -> "Networks":
        for module in (self.vae, self.image_encoder, self.reference_unet, self.denoising_unet, self.pose_guider):
            module.to(device=device, dtype=dtype).eval().requires_grad_(False)
        return self


class BatchStatisticsNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that always normalises with the mean and (biased) variance of the batch it gets,
    as a BatchNorm layer in training mode does, whatever train()/eval() says. The stored running
    statistics keep their checkpoint keys but are neither used nor updated, so a loaded model does
    not change from one generation to the next."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)


class AniPortraitPoseGuider(nn.Module):
    """AniPortrait's pose guider, module for module as released (so its checkpoint keys match).

    Conv-BatchNorm-ReLU stages 3-3-16-16-32-32-64-64-128 (4x4 stride-2 convolutions between them)
    to 1/8 size, a 1x1 projection to the UNet's first width times a learnable scale (added to the
    denoiser's conv_in), then four stages to 1/16, 1/32, 1/64, 1/64 with widths C, 2C, 4C, 4C, each
    followed by a transformer (added after the denoiser's four down blocks). The released model
    builds those transformers as cross-attention to the reference's landmark map, but its blocks
    have no cross-attention layer, so they attend to the pose features alone and the reference map
    has no effect; this takes no reference map.

    As AniPortrait's released inference runs it: its BatchNorm layers use the statistics of the batch
    (the original never calls eval()), so the features of a frame depend on the other frames of the
    batch, and the batch is what the caller decides (the pipeline: one window). Input: (frames, 3,
    H, W) landmark maps as the original feeds them, 2 * v - 1 for each uint8 value v. Output: five
    feature maps, finest first.
    """

    RELEASE_HEADS, RELEASE_HEAD_DIM = 16, 88

    def __init__(self, channels: int = 320, heads: int = RELEASE_HEADS, head_dim: int = RELEASE_HEAD_DIM):
        super().__init__()

        def stage(pairs):
            layers = []
            for in_c, out_c, kernel, stride in pairs:
                layers += [nn.Conv2d(in_c, out_c, kernel, stride=stride, padding=1), BatchStatisticsNorm2d(out_c),
                           nn.ReLU()]
            return nn.Sequential(*layers)

        self.conv_layers = stage([(3, 3, 3, 1), (3, 16, 4, 2), (16, 16, 3, 1), (16, 32, 4, 2), (32, 32, 3, 1),
                                  (32, 64, 4, 2), (64, 64, 3, 1), (64, 128, 3, 1)])
        self.final_proj = nn.Conv2d(128, channels, kernel_size=1)
        c = channels
        self.conv_layers_1 = stage([(c, c, 3, 1), (c, c, 3, 2)])
        self.conv_layers_2 = stage([(c, c, 3, 1), (c, 2 * c, 3, 2)])
        self.conv_layers_3 = stage([(2 * c, 2 * c, 3, 1), (2 * c, 4 * c, 3, 2)])
        self.conv_layers_4 = stage([(4 * c, 4 * c, 3, 1)])

        def transformer(width):
            return Transformer2DModel(num_attention_heads=heads, attention_head_dim=head_dim, in_channels=width,
                                      norm_num_groups=32, activation_fn="geglu")

        self.cross_attn1 = transformer(c)
        self.cross_attn2 = transformer(2 * c)
        self.cross_attn3 = transformer(4 * c)
        self.cross_attn4 = transformer(4 * c)
        self.scale = nn.Parameter(torch.ones(1) * 2)

    def forward(self, conditioning: torch.Tensor) -> list[torch.Tensor]:
        x = self.final_proj(self.conv_layers(conditioning)) * self.scale
        features = [x]
        for convs, attention in ((self.conv_layers_1, self.cross_attn1), (self.conv_layers_2, self.cross_attn2),
                                 (self.conv_layers_3, self.cross_attn3), (self.conv_layers_4, self.cross_attn4)):
            x = attention(convs(x), return_dict=False)[0]
            features.append(x)
        return features


def build_aniportrait_pose_guider(unet_config: dict, inner_dim: int | None = None) -> AniPortraitPoseGuider:
    """AniPortrait's guider for a UNet config. The release's transformers have 16 heads of 88
    channels; a checkpoint of another inner width (a small test model) gets heads of 8 channels."""
    channels = unet_config["block_out_channels"][0]
    widths = list(unet_config["block_out_channels"])
    if widths != [channels, 2 * channels, 4 * channels, 4 * channels]:
        raise ValueError(f"AniPortrait's guider needs UNet widths C, 2C, 4C, 4C, not {widths}")
    release_inner = AniPortraitPoseGuider.RELEASE_HEADS * AniPortraitPoseGuider.RELEASE_HEAD_DIM
    if inner_dim is None or inner_dim == release_inner:
        return AniPortraitPoseGuider(channels)
    return AniPortraitPoseGuider(channels, heads=inner_dim // 8, head_dim=8)
