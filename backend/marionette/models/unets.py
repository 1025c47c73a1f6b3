"""The UNets of the Moore-AnimateAnyone lineage (AnimateAnyone, AniPortrait, EchoMimic), assembled
from diffusers building blocks.

Architecture follows the released code (DESIGN.md, "Backend engines"); sizes follow the SD1.5 UNet
config found in the weights folder, so a small config gives a small model (tests) and the real one
the real model.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, MotionAdapter, UNet2DConditionModel, UNetMotionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding
from torch import nn

POSE_GUIDER_CHANNELS = (16, 32, 96, 256)
MOTION_MAX_FRAMES = 32
LATENT_SCALE = 0.18215


def ddim_scheduler() -> DDIMScheduler:
    """The sampler of the reference implementations."""
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
