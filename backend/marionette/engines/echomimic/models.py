"""EchoMimic v1's networks, built from the shared Moore-lineage UNets (marionette.models).

EchoMimic (antgroup/echomimic) is the Moore-AnimateAnyone design with audio in place of the image
embedding: the same ReferenceNet (its transformer blocks without cross-attention), the same
denoiser with AnimateDiff motion modules (its cross-attentions attend to Whisper features of width
384 instead of a CLIP embedding), a face locator of the pose guider's shape, and a Whisper-tiny
audio encoder. Sizes follow the UNet config in the weights folder, so a small config gives a small
model (tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel, UNetMotionModel
from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

from ...models.unets import build_denoising_unet, build_pose_guider, build_reference_unet
from .audio_features import WhisperAudioEncoder

MODES = ("audio", "pose")  # audio + a face-box mask, or audio + face landmark maps per frame
FACE_LOCATOR_CHANNELS = {"audio": 1, "pose": 3}
AUDIO_ATTENTION_SCALE = 3.0  # the release adds 3 x its audio cross-attention's output


def denoiser_config(unet_config: dict, audio_width: int) -> dict:
    """The SD config with the cross-attentions sized for the audio features (the release sets
    cross_attention_dim 384, Whisper-tiny's width)."""
    return {**unet_config, "cross_attention_dim": int(audio_width)}


def build_echomimic_reference_unet(unet_config: dict) -> UNet2DConditionModel:
    return build_reference_unet(unet_config, cross_attention=False)


def build_echomimic_denoising_unet(unet_config: dict, audio_width: int) -> UNetMotionModel:
    return build_denoising_unet(denoiser_config(unet_config, audio_width))


def build_face_locator(unet_config: dict, mode: str) -> ControlNetConditioningEmbedding:
    """The face locator: a face-box mask (audio mode, 1 channel) or a face landmark map (pose
    mode, 3 channels), each frame in [0, 1], to features added to the denoiser's conv_in."""
    if mode not in MODES:
        raise ValueError(f"unknown EchoMimic mode '{mode}'; one of {', '.join(MODES)}")
    return build_pose_guider(unet_config, FACE_LOCATOR_CHANNELS[mode])


@dataclass
class EchoMimicNetworks:
    """Everything one EchoMimic generation uses. `mode` and `accelerated` say which released
    checkpoints these are (they decide how the pipeline runs them)."""

    vae: AutoencoderKL
    reference_unet: UNet2DConditionModel
    denoising_unet: UNetMotionModel
    face_locator: ControlNetConditioningEmbedding
    audio_encoder: WhisperAudioEncoder
    scheduler: DDIMScheduler
    mode: str = "audio"
    accelerated: bool = False

    def to(self, device: torch.device, dtype: torch.dtype) -> "EchoMimicNetworks":
        for module in (self.vae, self.reference_unet, self.denoising_unet, self.face_locator):
            module.to(device=device, dtype=dtype).eval().requires_grad_(False)
        # The audio encoder keeps float32 weights and computes in the dtype it is given (see
        # audio_features), as the released inference runs it.
        self.audio_encoder.to(device=device).eval().requires_grad_(False)
        return self
