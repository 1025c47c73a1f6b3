"""audio2mesh's network and its arithmetic: the fine-tuned wav2vec2 encoder with the time
interpolation where AniPortrait places it, then in_fn and out_fn; the audio normalisation, the frame
count and the axes of its output."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Wav2Vec2Model

from marionette_core import lip_sync_offsets as offsets_format

from ..audio import SAMPLE_RATE

MODEL_FPS = 30  # the rate audio2mesh was trained at: its frames are 1/30 s apart
LANDMARKS = offsets_format.LANDMARKS
MIN_SAMPLES = 400  # the convolutional encoder's receptive field: shorter sound gives no feature

# facebook/wav2vec2-base-960h's architecture (its config.json), so no hub access is needed to build
# the encoder. Dropouts do not matter at inference.
WAV2VEC2_BASE_960H = {
    "model_type": "wav2vec2",
    "conv_dim": [512, 512, 512, 512, 512, 512, 512],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False,
    "num_feat_extract_layers": 7,
    "feat_extract_norm": "group",
    "feat_extract_activation": "gelu",
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "do_stable_layer_norm": False,
    "apply_spec_augment": True,
    "mask_time_prob": 0.05,
    "mask_time_length": 10,
    "mask_feature_prob": 0.0,
    "mask_feature_length": 10,
    "hidden_dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.1,
    "feat_proj_dropout": 0.1,
    "final_dropout": 0.1,
    "layerdrop": 0.1,
    "vocab_size": 32,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
LATENT_DIM = 512  # in_fn's width in the release (read from the checkpoint when loading)


def normalise(audio: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the whole clip (Wav2Vec2FeatureExtractor's do_normalize)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    return ((audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)).astype(np.float32)


def frame_count(samples: int, fps: float) -> int:
    """How many frames at `fps` a sound of `samples` 16 kHz samples lasts: ceil(seconds * fps), the
    original's rule (frame i is at i / fps seconds)."""
    return offsets_format.frame_count(samples / SAMPLE_RATE, fps)


def canonical_to_blender(offsets_cm: np.ndarray) -> np.ndarray:
    """Offsets in centimetres of MediaPipe's canonical face axes (+y up, +z out of the face) to
    metres in Blender's (x = x, y = -z, z = y)."""
    offsets_cm = np.asarray(offsets_cm)
    return (np.stack([offsets_cm[..., 0], -offsets_cm[..., 2], offsets_cm[..., 1]], axis=-1) * 0.01) \
        .astype(np.float32)


def build_audio2mesh(encoder_config, latent_dim: int = LATENT_DIM, encoder=None):
    """The network with the release's module names: audio_encoder (transformers' Wav2Vec2Model;
    `encoder` if given), in_fn, out_fn. Random weights otherwise; see load_audio2mesh."""
    return torch.nn.ModuleDict({
        "audio_encoder": encoder if encoder is not None else Wav2Vec2Model(encoder_config),
        "in_fn": torch.nn.Linear(encoder_config.hidden_size, latent_dim),
        "out_fn": torch.nn.Linear(latent_dim, LANDMARKS * 3),
    })


def interpolate_features(features, seq_len: int):
    """(B, T, C) features at the encoder's rate to (B, seq_len, C), linear with align_corners=True
    (the first and last features land on the first and last frame), as the original does."""
    return F.interpolate(features.transpose(1, 2), size=seq_len, mode="linear", align_corners=True).transpose(1, 2)


def audio2mesh_forward(model, input_values, seq_len: int):
    """(B, samples) normalised 16 kHz audio -> (B, seq_len, 1404) offsets in canonical centimetres.

    The encoder's own submodules run in the original's order, with the time interpolation placed
    where the original puts it: between the convolutional features and the feature projection.
    (SpecAugment masking is a training-time step and is skipped.)"""
    encoder = model["audio_encoder"]
    features = encoder.feature_extractor(input_values).transpose(1, 2)  # (B, T50, conv width)
    features = interpolate_features(features, seq_len)
    hidden, _normed = encoder.feature_projection(features)
    hidden = encoder.encoder(hidden).last_hidden_state
    if encoder.adapter is not None:
        hidden = encoder.adapter(hidden)
    return model["out_fn"](model["in_fn"](hidden))
