"""The AnimateAnyone-family networks, assembled from diffusers and transformers building blocks.

Architecture follows the released code (DESIGN.md, "Backend engines"); sizes follow the SD1.5 UNet
config found in the weights folder, so a small config gives a small model (tests) and the real one
the real model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel, UNetMotionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding
from torch import nn
from torch.nn import functional as F
from transformers import CLIPVisionModelWithProjection

GUIDERS = ("animate-anyone", "aniportrait")  # Moore-AnimateAnyone's pose guider, or AniPortrait's
POSE_GUIDER_CHANNELS = (16, 32, 96, 256)
MOTION_MAX_FRAMES = 32
LATENT_SCALE = 0.18215


def ddim_scheduler() -> DDIMScheduler:
    """The sampler of the reference implementation."""
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", steps_offset=1,
                         clip_sample=False, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                         timestep_spacing="trailing")


class PerFrameGroupNorm(nn.GroupNorm):
    """GroupNorm over each frame of a (batch, channels, frames, height, width) tensor.

    AnimateDiff's motion modules normalise every frame on its own; diffusers' AnimateDiffTransformer3D
    normalises across the frames. Same parameters (so the same checkpoint keys), per-frame statistics.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            return super().forward(x)
        batch, channels, frames, height, width = x.shape
        flat = x.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)
        flat = super().forward(flat)
        return flat.reshape(batch, frames, channels, height, width).permute(0, 2, 1, 3, 4)


def use_per_frame_motion_norms(model: nn.Module) -> None:
    for module in model.modules():
        norm = getattr(module, "norm", None)
        if type(module).__name__ == "AnimateDiffTransformer3D" and type(norm) is nn.GroupNorm:
            per_frame = PerFrameGroupNorm(norm.num_groups, norm.num_channels, norm.eps, norm.affine)
            per_frame.load_state_dict(norm.state_dict())
            module.norm = per_frame.to(norm.weight.device, norm.weight.dtype)


def build_reference_unet(unet_config: dict, cross_attention: bool = True) -> UNet2DConditionModel:
    """ReferenceNet: the SD1.5 UNet without its output head (only its attention inputs are used).

    cross_attention=False builds it as EchoMimic's release has it: its transformer blocks are
    self-attention and feed-forward only (no norm2/attn2, so no conditioning at all).
    """
    unet = UNet2DConditionModel.from_config(unet_config)
    unet.conv_norm_out = None
    unet.conv_out = nn.Identity()
    if not cross_attention:
        for module in unet.modules():
            if isinstance(module, BasicTransformerBlock):
                module.attn2 = None
                module.norm2 = None
    return unet


def build_denoising_unet(unet_config: dict) -> UNetMotionModel:
    """Denoiser: the SD1.5 UNet with AnimateDiff v2 motion modules (8 heads, one transformer block
    of two temporal self-attentions, sinusoidal positions up to 32 frames, in every down, mid and up
    block), the motion modules' GroupNorm per frame."""
    channels = tuple(unet_config["block_out_channels"])
    adapter = MotionAdapter(
        block_out_channels=channels,
        motion_layers_per_block=unet_config.get("layers_per_block", 2),
        motion_transformer_layers_per_block=1,
        motion_mid_block_layers_per_block=1,
        motion_num_attention_heads=8,
        motion_norm_num_groups=unet_config.get("norm_num_groups", 32),
        motion_max_seq_length=MOTION_MAX_FRAMES,
        use_motion_mid_block=True,
    )
    denoiser = UNetMotionModel.from_unet2d(UNet2DConditionModel.from_config(unet_config), adapter)
    use_per_frame_motion_norms(denoiser)
    return denoiser


def build_pose_guider(unet_config: dict, conditioning_channels: int = 3) -> ControlNetConditioningEmbedding:
    """Moore's pose guider: RGB control map in [0, 1] to features added to the denoiser's conv_in.

    EchoMimic's face locator is the same per-frame stack (conv 3x3 to 16, then 16-16, 16-32/2,
    32-32, 32-96/2, 96-96, 96-256/2, each followed by SiLU, and a zero-initialised conv to the
    UNet's first width), with 1 input channel (a face-box mask) or 3 (a face landmark map)."""
    return ControlNetConditioningEmbedding(unet_config["block_out_channels"][0], conditioning_channels,
                                           POSE_GUIDER_CHANNELS)


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
        from diffusers import Transformer2DModel

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
