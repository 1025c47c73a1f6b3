"""A tiny audio2mesh with random weights, saved as AniPortrait's release lays it out, for CPU tests.

The encoder is a wav2vec2 with the released structure (7 convolutions with wav2vec2's kernels and
strides, so 320 samples per feature; group-norm feature extractor; post-layer-norm encoder) at toy
widths. audio2mesh.pt is a flat state dict whose positional-convolution weights are spelled as torch
2.0 (the release's) spelled them: weight_g / weight_v.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from marionette.lip_sync.model import WAV2VEC2_BASE_960H

# The released architecture (kernels, strides, norms) at toy widths.
TINY_WAV2VEC2 = {**WAV2VEC2_BASE_960H, "conv_dim": [16] * 7, "hidden_size": 24, "num_hidden_layers": 2,
                 "num_attention_heads": 2, "intermediate_size": 32, "num_conv_pos_embeddings": 16,
                 "num_conv_pos_embedding_groups": 4}
TINY_LATENT = 8


def tiny_model(seed: int = 0):
    from transformers import Wav2Vec2Config

    from marionette.lip_sync.model import build_audio2mesh

    torch.manual_seed(seed)
    model = build_audio2mesh(Wav2Vec2Config(**TINY_WAV2VEC2), TINY_LATENT)
    with torch.no_grad():  # visible outputs: the release's out_fn is not small either
        model["out_fn"].weight.normal_(0.0, 0.5)
        model["out_fn"].bias.normal_(0.0, 0.2)
    return model.eval()


def released_state(model) -> dict[str, torch.Tensor]:
    """The model's state dict with the release's key spelling (torch 2.0 weight norm)."""
    state = {}
    for key, value in model.state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        state[key] = value.clone()
    return state


def save_release(model, folder: Path, config: bool = True, encoder_weights: bool = False,
                 drop: tuple[str, ...] = ()) -> Path:
    """folder/audio2mesh.pt (minus the keys starting with any of `drop`), and with `config` a
    wav2vec2-base-960h/config.json of the tiny encoder (with `encoder_weights`, its weights too)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in released_state(model).items() if not k.startswith(drop)}
    torch.save(state, folder / "audio2mesh.pt")
    if config:
        wav2vec2 = folder / "wav2vec2-base-960h"
        wav2vec2.mkdir(exist_ok=True)
        if encoder_weights:
            model["audio_encoder"].save_pretrained(wav2vec2)
        else:
            (wav2vec2 / "config.json").write_text(json.dumps(TINY_WAV2VEC2))
    return folder


def constant_model(offset_cm, seed: int = 0):
    """A tiny model whose out_fn has zero weights and `offset_cm` (468 x 3, canonical centimetres)
    as its bias: every frame's output is that offset, whatever the sound."""
    model = tiny_model(seed)
    with torch.no_grad():
        model["out_fn"].weight.zero_()
        model["out_fn"].bias.copy_(torch.as_tensor(offset_cm, dtype=torch.float32).reshape(-1))
    return model
