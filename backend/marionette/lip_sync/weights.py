"""audio2mesh's weights folder (the release's `pretrained_model/` layout; see the package's
docstring): checked, loaded as the original loads it (non-strictly, over wav2vec2-base-960h's own
weights) with what would silently give a wrong face refused, and the last model kept."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import Wav2Vec2Config, Wav2Vec2Model

from ..engines.base import ModelCache
from . import LipSyncError
from .model import LATENT_DIM, WAV2VEC2_BASE_960H, build_audio2mesh

log = logging.getLogger("marionette.lip_sync")

CHECKPOINT_STEM = "audio2mesh"
WAV2VEC2_FOLDER = "wav2vec2-base-960h"
WAV2VEC2_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

# The positional convolution is weight-normalised. The release was saved with torch 2.0, whose
# weight_norm names the parts weight_g/weight_v; newer torch (parametrizations) names them
# original0/original1. Checkpoint names are mapped to whichever this torch uses.
WEIGHT_NORM_NAMES = (("weight_g", "parametrizations.weight.original0"),
                     ("weight_v", "parametrizations.weight.original1"))
# Weights the encoder has that inference never uses (SpecAugment's mask embedding).
UNUSED_ENCODER_WEIGHTS = ("audio_encoder.masked_spec_embed",)



def checkpoint_path(folder: Path) -> Path:
    for suffix in (".safetensors", ".pt"):
        path = folder / f"{CHECKPOINT_STEM}{suffix}"
        if path.is_file():
            return path
    raise LipSyncError(f"the weights folder {folder} has no {CHECKPOINT_STEM}.pt (AniPortrait's release; or an "
                       f"{CHECKPOINT_STEM}.safetensors twin); `marionette weights fetch lip-sync --to {folder}` "
                       f"fetches it")


def check_weights_folder(folder: Path | str) -> None:
    """LipSyncError naming the first file lip sync needs that the folder lacks (nothing is loaded)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise LipSyncError(f"the lip sync weights folder {folder} does not exist; `marionette weights fetch lip-sync "
                           f"--to {folder}` fetches it")
    checkpoint_path(folder)
    encoder_config(folder)


def read_checkpoint(path: Path) -> dict:
    try:
        if path.suffix == ".safetensors":
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
