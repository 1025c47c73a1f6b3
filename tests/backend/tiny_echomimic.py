"""Tiny EchoMimic networks with random weights, in the real architecture, for CPU tests; and a tiny
OpenAI Whisper checkpoint written as OpenAI writes one ({"dims", "model_state_dict"}, OpenAI's key
names, the text decoder's entries included)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from tiny_animate_anyone import TINY_UNET_CONFIG, TINY_VAE

TINY_WHISPER_DIMS = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 16, "n_audio_head": 2,
                     "n_audio_layer": 4, "n_vocab": 12, "n_text_ctx": 4, "n_text_state": 16, "n_text_head": 2,
                     "n_text_layer": 1}


def openai_sinusoids(length: int, channels: int) -> torch.Tensor:
    """Whisper's encoder position table: sin then cos of positions at geometric timescales."""
    increment = math.log(10000) / (channels // 2 - 1)
    inverse = torch.exp(-increment * torch.arange(channels // 2))
    angles = torch.arange(length)[:, None] * inverse[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def tiny_whisper_checkpoint(seed: int = 0, dims: dict | None = None) -> dict:
    """{"dims", "model_state_dict"} of a random Whisper model, keys as in OpenAI's files."""
    dims = dict(dims or TINY_WHISPER_DIMS)
    generator = torch.Generator().manual_seed(seed)
    width, mels = dims["n_audio_state"], dims["n_mels"]

    def rand(*shape, scale=0.2):
        return torch.randn(shape, generator=generator) * scale

    state = {"encoder.conv1.weight": rand(width, mels, 3, scale=0.1), "encoder.conv1.bias": rand(width),
             "encoder.conv2.weight": rand(width, width, 3, scale=0.15), "encoder.conv2.bias": rand(width),
             "encoder.positional_embedding": openai_sinusoids(dims["n_audio_ctx"], width)}
    for block in range(dims["n_audio_layer"]):
        prefix = f"encoder.blocks.{block}."
        for name in ("query", "key", "value", "out"):
            state[f"{prefix}attn.{name}.weight"] = rand(width, width, scale=0.3)
            if name != "key":  # Whisper's key projection has no bias
                state[f"{prefix}attn.{name}.bias"] = rand(width)
        for norm in ("attn_ln", "mlp_ln"):
            state[f"{prefix}{norm}.weight"] = 1 + rand(width, scale=0.1)
            state[f"{prefix}{norm}.bias"] = rand(width, scale=0.1)
        state[f"{prefix}mlp.0.weight"], state[f"{prefix}mlp.0.bias"] = rand(4 * width, width), rand(4 * width)
        state[f"{prefix}mlp.2.weight"], state[f"{prefix}mlp.2.bias"] = rand(width, 4 * width), rand(width)
    state["encoder.ln_post.weight"], state["encoder.ln_post.bias"] = 1 + rand(width, scale=0.1), rand(width)
    text = dims["n_text_state"]
    state["decoder.token_embedding.weight"] = rand(dims["n_vocab"], text)
    state["decoder.positional_embedding"] = rand(dims["n_text_ctx"], text)
    state["decoder.ln.weight"], state["decoder.ln.bias"] = torch.ones(text), torch.zeros(text)
    return {"dims": dims, "model_state_dict": state}


def write_whisper_checkpoint(path: Path, checkpoint: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def tiny_networks(seed: int = 0, mode: str = "audio", accelerated: bool = False, whisper_seed: int = 0,
                  whisper_dims: dict | None = None):
    """(EchoMimicNetworks, unet config, whisper checkpoint) at toy size; all weights random
    (zero-initialised layers too, so that every part changes the output)."""
    from diffusers import AutoencoderKL

    from marionette.engines.echomimic.audio_features import WhisperAudioEncoder
    from marionette.engines.echomimic.models import (EchoMimicNetworks, build_echomimic_denoising_unet,
                                                     build_echomimic_reference_unet, build_face_locator)
    from marionette.models.unets import ddim_scheduler

    torch.manual_seed(seed)
    config = dict(TINY_UNET_CONFIG)
    checkpoint = tiny_whisper_checkpoint(whisper_seed, whisper_dims)
    dims = checkpoint["dims"]
    encoder = WhisperAudioEncoder(**{k: dims[k] for k in ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head",
                                                           "n_audio_layer")})
    encoder.load_state_dict({k[len("encoder."):]: v for k, v in checkpoint["model_state_dict"].items()
                             if k.startswith("encoder.")})
    vae = AutoencoderKL(**TINY_VAE)
    networks = EchoMimicNetworks(vae, build_echomimic_reference_unet(config),
                                 build_echomimic_denoising_unet(config, dims["n_audio_state"]),
                                 build_face_locator(config, mode), encoder, ddim_scheduler(), mode, accelerated)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in (networks.reference_unet, networks.denoising_unet, networks.face_locator):
            for parameter in module.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return networks.to(torch.device("cpu"), torch.float32), config, checkpoint


def write_release(folder: Path, seed: int = 0, mode: str = "audio", accelerated: bool = False):
    """A weights folder in the release's layout for one variant; returns (networks, config)."""
    from marionette.engines.echomimic.weights import WHISPER_CHECKPOINT, save_release_layout

    networks, config, checkpoint = tiny_networks(seed, mode, accelerated)
    save_release_layout(networks, config, folder)
    write_whisper_checkpoint(folder / WHISPER_CHECKPOINT, checkpoint)
    return networks, config
