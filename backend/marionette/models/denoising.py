"""The pieces of the Moore-lineage denoising loop that AnimateAnyone, AniPortrait and EchoMimic
share: the reference's latent, control features added to the denoiser through hooks, classifier-free
guidance, and decoding latents to frames as the reference implementations save them."""

from __future__ import annotations

import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from .unets import LATENT_SCALE


class AddedFeatures:
    """Feature maps added to the denoiser's activations through forward hooks (no forward is
    patched): level 0 to the output of conv_in, level k to the output of down block k - 1. Set
    `features` (a list, finest first, each shaped like that activation) around a denoiser call;
    levels beyond the list, and every level while it is None, are left alone."""

    def __init__(self, unet: torch.nn.Module, down_blocks: bool = True):
        self.features: list[torch.Tensor] | None = None
        unet.conv_in.register_forward_hook(self._hook(0))
        if down_blocks:
            for index, block in enumerate(unet.down_blocks):
                block.register_forward_hook(self._hook(index + 1))

    def _hook(self, level: int):
        def hook(_module, _inputs, output):
            features = self.features
            if features is None or level >= len(features):
                return output
            if isinstance(output, tuple):  # a down block: (hidden states, skip connections)
                return (output[0] + features[level],) + tuple(output[1:])
            return output + features[level]
        return hook


def encode_reference(vae, processor: VaeImageProcessor, image: Image.Image, width: int, height: int,
                     device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(1, 4, height/8, width/8): the VAE latent mean of the reference at width x height, pixels in
    [-1, 1], times the SD latent scale (no random draw)."""
    pixels = processor.preprocess(image, height=height, width=width)
    return vae.encode(pixels.to(device, dtype)).latent_dist.mean * LATENT_SCALE


def decode_to_images(vae, latents: torch.Tensor, batch: int) -> list[np.ndarray]:
    """(n, 4, h, w) latents already divided by the latent scale -> n (8h, 8w, 3) uint8 RGB frames,
    decoded `batch` at a time; (x / 2 + 0.5).clamp(0, 1) * 255 truncated, as the references save them."""
    images = []
    for chunk in latents.split(batch):
        pixels = vae.decode(chunk).sample
        pixels = (pixels / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()
        images += list((pixels * 255).astype(np.uint8))  # truncation, as the reference saves frames
    return images


def guide(prediction: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance on a prediction whose batch is [unconditional, conditional] (two
    entries), or the prediction itself when it has one entry."""
    if prediction.shape[0] == 2:
        unconditional, conditional = prediction.chunk(2)
        return unconditional + guidance * (conditional - unconditional)
    return prediction
