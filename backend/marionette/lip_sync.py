"""Lip sync from audio: AniPortrait's audio2mesh, the sound turned into per-frame offsets of the 468
canonical face landmarks, which Blender's Lip Sync solves onto a face's shape keys.

The model (AniPortrait, Apache-2.0, `src/audio_models/model.py` and `wav2vec2.py`): a wav2vec 2.0
encoder (wav2vec2-base-960h, fine-tuned) whose convolutional features (50 per second) are linearly
interpolated in time to the video frames (30 per second) BEFORE the feature projection, the
positional convolution and the transformer layers; the last hidden state then goes through two
linear layers with nothing between them, `in_fn` (hidden -> 512) and `out_fn` (512 -> 468 x 3).
The output is, per frame, the offset of each vertex of MediaPipe's canonical face geometry in
centimetres (+x the subject's left, +y up, +z out of the face) from the speaker's neutral face.

Weights folder (the release's `pretrained_model/` layout):
    audio2mesh.pt          flat state dict: audio_encoder.* (the fine-tuned encoder), in_fn.*, out_fn.*
                           (or an audio2mesh.safetensors twin)
    wav2vec2-base-960h/    facebook/wav2vec2-base-960h: config.json, and its weights (pytorch_model.bin
                           or model.safetensors). The original builds the encoder from this folder,
                           then loads audio2mesh.pt over it non-strictly. Without the folder the
                           encoder is built from the same configuration (below), and audio2mesh.pt
                           must then hold every encoder weight.
Nothing is ever downloaded.

Audio: 16 kHz mono, normalised over the whole clip, (x - mean) / sqrt(var + 1e-7) (as the
original's Wav2Vec2FeatureExtractor with do_normalize). Frames: ceil(seconds * 30).
"""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path

import numpy as np

from marionette_core import lip_sync_offsets as offsets_format
from marionette_core.protocol import error_message

from .audio import SAMPLE_RATE, AudioError, load_audio
from .engines.base import EngineError, ModelCache

log = logging.getLogger("marionette.lip_sync")

CHECKPOINT_STEM = "audio2mesh"
WAV2VEC2_FOLDER = "wav2vec2-base-960h"
WAV2VEC2_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
MODEL_FPS = 30  # the rate audio2mesh was trained at: its frames are 1/30 s apart
LANDMARKS = offsets_format.LANDMARKS
MIN_SAMPLES = 400  # the convolutional encoder's receptive field: shorter sound gives no feature
MAX_SECONDS = 600.0  # per request to the server: attention over every frame of the clip at once

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

# The positional convolution is weight-normalised. The release was saved with torch 2.0, whose
# weight_norm names the parts weight_g/weight_v; newer torch (parametrizations) names them
# original0/original1. Checkpoint names are mapped to whichever this torch uses.
WEIGHT_NORM_NAMES = (("weight_g", "parametrizations.weight.original0"),
                     ("weight_v", "parametrizations.weight.original1"))
# Weights the encoder has that inference never uses (SpecAugment's mask embedding).
UNUSED_ENCODER_WEIGHTS = ("audio_encoder.masked_spec_embed",)


class LipSyncError(EngineError):
    """Lip sync cannot run; the message names the cause and the fix. `code` is the protocol's error
    code the server answers with."""

    def __init__(self, message: str, code: str = "engine_failed"):
        super().__init__(message)
        self.code = code


# --- audio and frames --------------------------------------------------------------------

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


# --- the model ---------------------------------------------------------------------------

def build_audio2mesh(encoder_config, latent_dim: int = LATENT_DIM, encoder=None):
    """The network with the release's module names: audio_encoder (transformers' Wav2Vec2Model;
    `encoder` if given), in_fn, out_fn. Random weights otherwise; see load_audio2mesh."""
    import torch
    from transformers import Wav2Vec2Model

    return torch.nn.ModuleDict({
        "audio_encoder": encoder if encoder is not None else Wav2Vec2Model(encoder_config),
        "in_fn": torch.nn.Linear(encoder_config.hidden_size, latent_dim),
        "out_fn": torch.nn.Linear(latent_dim, LANDMARKS * 3),
    })


def interpolate_features(features, seq_len: int):
    """(B, T, C) features at the encoder's rate to (B, seq_len, C), linear with align_corners=True
    (the first and last features land on the first and last frame), as the original does."""
    import torch.nn.functional as F

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


def checkpoint_path(folder: Path) -> Path:
    for suffix in (".safetensors", ".pt"):
        path = folder / f"{CHECKPOINT_STEM}{suffix}"
        if path.is_file():
            return path
    raise LipSyncError(f"the weights folder {folder} has no {CHECKPOINT_STEM}.pt (AniPortrait's release; or an "
                       f"{CHECKPOINT_STEM}.safetensors twin)")


def read_checkpoint(path: Path) -> dict:
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which one
        raise LipSyncError(f"cannot read {path}: {error}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LipSyncError(f"{path} is not a flat state dict of tensors (AniPortrait's audio2mesh.pt is one)")
    return state


def encoder_config(folder: Path):
    """The encoder's configuration: the weights folder's wav2vec2-base-960h/config.json where there
    is one (the original reads it), else wav2vec2-base-960h's as written above."""
    from transformers import Wav2Vec2Config

    wav2vec2 = folder / WAV2VEC2_FOLDER
    if not wav2vec2.is_dir():
        return Wav2Vec2Config(**WAV2VEC2_BASE_960H)
    if not (wav2vec2 / "config.json").is_file():
        raise LipSyncError(f"{wav2vec2} has no config.json; copy facebook/wav2vec2-base-960h's files there "
                           f"(or remove the folder to use the built-in configuration)")
    try:
        return Wav2Vec2Config.from_pretrained(wav2vec2, local_files_only=True)
    except (OSError, ValueError) as error:
        raise LipSyncError(f"cannot read {wav2vec2 / 'config.json'}: {error}") from None


def _model_name(key: str, expected) -> str:
    """The name this torch gives a checkpoint key (weight-norm parts are spelled two ways)."""
    if key in expected:
        return key
    for old, new in WEIGHT_NORM_NAMES:
        for source, target in ((old, new), (new, old)):
            if key.endswith("." + source) and key[:-len(source)] + target in expected:
                return key[:-len(source)] + target
    return key


def load_audio2mesh(weights_dir: Path | str, device: str = "cpu"):
    """The released model, in float32 on `device`, in eval mode, from a weights folder laid out as
    described at the top of this module."""
    import torch

    folder = Path(weights_dir).expanduser()
    if not folder.is_dir():
        raise LipSyncError(f"the weights folder {folder} does not exist; give the folder that holds "
                           f"{CHECKPOINT_STEM}.pt")
    path = checkpoint_path(folder)
    state = read_checkpoint(path)
    config = encoder_config(folder)
    in_weight = state.get("in_fn.weight")
    # As the original: the encoder starts from wav2vec2-base-960h's weights where the folder has them.
    pretrained = _pretrained_encoder(folder / WAV2VEC2_FOLDER)
    model = build_audio2mesh(config, int(in_weight.shape[0]) if in_weight is not None else LATENT_DIM, pretrained)
    _load_checkpoint(model, state, path, encoder_filled=pretrained is not None)
    return model.to(device=device, dtype=torch.float32).eval()


def _pretrained_encoder(wav2vec2: Path):
    if not any((wav2vec2 / name).is_file() for name in WAV2VEC2_WEIGHT_FILES):
        return None
    import torch
    from transformers import Wav2Vec2Model

    try:
        encoder = Wav2Vec2Model.from_pretrained(wav2vec2, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise LipSyncError(f"cannot load the wav2vec2 weights in {wav2vec2}: {error}") from None
    with torch.no_grad():  # own the memory: from_pretrained may leave a file mapping
        for parameter in encoder.parameters():
            parameter.data = parameter.data.clone()
    return encoder


def _load_checkpoint(model, state: dict, path: Path, encoder_filled: bool) -> None:
    """Load audio2mesh.pt over the model non-strictly, as the original does, but refuse what would
    silently give a wrong face: no output layers (a frozen face), shapes that differ, or an encoder
    left with random weights."""
    expected = model.state_dict()
    mapped = {_model_name(key, expected): value for key, value in state.items()}
    for key in ("in_fn.weight", "in_fn.bias", "out_fn.weight", "out_fn.bias"):
        if key not in mapped:
            raise LipSyncError(f"{path} has no '{key}': it is not AniPortrait's audio2mesh.pt (without its "
                               f"output layers every frame would be the neutral face)")
    mismatched = [key for key, value in mapped.items()
                  if key in expected and tuple(value.shape) != tuple(expected[key].shape)]
    if mismatched:
        key = mismatched[0]
        raise LipSyncError(f"{path}: {len(mismatched)} weights have another shape than the model's (e.g. {key}: "
                           f"{tuple(mapped[key].shape)} vs {tuple(expected[key].shape)}); check "
                           f"{WAV2VEC2_FOLDER}/config.json")
    missing = [key for key in expected if key not in mapped and key not in UNUSED_ENCODER_WEIGHTS]
    if missing and not encoder_filled:
        raise LipSyncError(f"{path} lacks {len(missing)} weights of the audio encoder (e.g. {missing[0]}) and "
                           f"{path.parent / WAV2VEC2_FOLDER} has no weights to take them from; put "
                           f"facebook/wav2vec2-base-960h there (config.json and pytorch_model.bin or "
                           f"model.safetensors)")
    unused = [key for key in mapped if key not in expected]
    if unused:
        log.info("%s: %d keys the model does not use (e.g. %s)", path.name, len(unused), unused[0])
    model.load_state_dict({key: value for key, value in mapped.items() if key in expected}, strict=False)
    import torch

    if not torch.equal(model["out_fn"].weight.detach().cpu(), mapped["out_fn.weight"].to(torch.float32)):
        raise LipSyncError(f"out_fn.weight of {path} did not load into the model")


_models = ModelCache()  # the last model used: a server answers many requests with one


def cached_audio2mesh(weights_dir: Path | str, device: str):
    """load_audio2mesh, keeping the last model (a changed checkpoint file is loaded again)."""
    folder = Path(weights_dir).expanduser().resolve()
    try:
        stat = checkpoint_path(folder).stat() if folder.is_dir() else None
    except LipSyncError:
        stat = None
    key = (str(folder), device, stat and (stat.st_mtime_ns, stat.st_size))
    return _models.get(key, lambda: load_audio2mesh(folder, device))


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def predict_offsets(weights_dir: Path | str, audio16k: np.ndarray, fps: float, device: str | None = None,
                    model=None) -> np.ndarray:
    """Per-frame offsets of the 468 canonical face landmarks from a neutral face while speaking
    `audio16k` (16 kHz mono float32): (frames, 468, 3) float32, metres, Blender axes of the canonical
    face (+X the subject's left, -Y out of the face, +Z up), at `fps` (frame i at i / fps s; frames =
    ceil(seconds * fps)). The model runs at its own 30 fps; other rates are interpolated linearly."""
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError:
        raise LipSyncError("lip sync needs torch and transformers in the backend: "
                           "pip install 'marionette[diffusion]'") from None
    audio = np.asarray(audio16k, dtype=np.float32).reshape(-1)
    if len(audio) < MIN_SAMPLES:
        raise LipSyncError(f"the sound lasts {len(audio) / SAMPLE_RATE * 1000:.1f} ms; lip sync needs at least "
                           f"{MIN_SAMPLES / SAMPLE_RATE * 1000:.0f} ms", code="bad_request")
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        fps = math.nan
    if not (math.isfinite(fps) and 0 < fps <= 1000):
        raise LipSyncError("fps must be a number of frames per second above 0 and at most 1000", code="bad_request")
    device = device or default_device()
    if model is None:
        model = cached_audio2mesh(weights_dir, device)
    seq_len = frame_count(len(audio), MODEL_FPS)
    parameter = next(model.parameters())
    values = torch.from_numpy(normalise(audio))[None].to(device=parameter.device, dtype=parameter.dtype)
    with torch.inference_mode():
        output = audio2mesh_forward(model, values, seq_len)[0]
    offsets = canonical_to_blender(output.float().cpu().numpy().reshape(seq_len, LANDMARKS, 3))
    return offsets_format.resample_frames(offsets, MODEL_FPS, fps, frame_count(len(audio), fps))


# --- the server's answer --------------------------------------------------------------

def answer_lip_sync(header: dict, audio: bytes, default_weights: Path | str | None = None,
                    ) -> tuple[dict, list[tuple[str, bytes]]]:
    """The server's answer to a `lip_sync` request (header: fps, weights, optional device; the sound
    file's bytes, any common format): the answer header and its one attachment, the offsets as raw
    little-endian float32 of the header's shape."""
    fps = header.get("fps")
    if type(fps) not in (int, float) or not math.isfinite(fps) or not 0 < fps <= 1000:
        raise LipSyncError("'lip_sync' needs 'fps': the frame rate to key at (frames per second)", code="bad_request")
    weights = header.get("weights") or default_weights
    if not isinstance(weights, (str, Path)) or not str(weights):
        raise LipSyncError("'lip_sync' needs 'weights': the backend's folder with audio2mesh.pt "
                           "(and wav2vec2-base-960h/)", code="bad_request")
    device = header.get("device")
    if device is not None and not isinstance(device, str):
        raise LipSyncError("'device' must be a string such as 'cpu' or 'cuda'", code="bad_request")
    try:
        samples = load_audio(audio)
    except AudioError as error:
        raise LipSyncError(str(error), code="bad_request") from None
    seconds = len(samples) / SAMPLE_RATE
    if seconds > MAX_SECONDS:
        raise LipSyncError(f"the sound lasts {seconds:.0f} s; lip sync takes at most {MAX_SECONDS:.0f} s at once: "
                           f"split it (or run `marionette lip-sync` on it)", code="limit")
    offsets = predict_offsets(weights, samples, float(fps), device=device or "cpu")
    answer = {"type": "lip_sync", **offsets_format.header(offsets, fps, seconds)}
    if "id" in header:
        answer["id"] = header["id"]
    return answer, [(offsets_format.ATTACHMENT, offsets_format.to_bytes(offsets))]


async def handle_lip_sync(message, send, default_weights: Path | str | None = None) -> None:
    """Serve one `lip_sync` request on a connection: the work runs on a thread, the answer (or an
    error message naming the cause) is sent with `send(header, attachments)`."""
    try:
        if not message.attachments:
            raise LipSyncError("'lip_sync' needs the sound as its attachment", code="bad_request")
        answer, attachments = await asyncio.to_thread(answer_lip_sync, message.header, message.attachments[0],
                                                      default_weights)
    except LipSyncError as error:
        await send(error_message(error.code, str(error)))
        return
    except Exception as error:  # a model failure fails this request, not the connection
        log.exception("lip sync failed")
        await send(error_message("engine_failed", f"lip sync failed: {error}"))
        return
    await send(answer, attachments)
