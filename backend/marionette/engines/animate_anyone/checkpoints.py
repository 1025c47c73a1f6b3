"""Loading the released weights from a folder laid out like the release's `pretrained_weights/`.

    stable-diffusion-v1-5/unet/config.json   only the config is read: it sizes every network
    sd-vae-ft-mse/                            diffusers AutoencoderKL folder
    image_encoder/                            transformers CLIPVisionModelWithProjection folder
    denoising_unet.pth    SD UNet key names (no motion modules)
    reference_unet.pth    SD UNet key names (the output head's keys, if present, are not used)
    pose_guider.pth       Moore: ControlNetConditioningEmbedding key names; AniPortrait: its PoseGuider's
    motion_module.pth     original AnimateDiff key names (mapped below)
Each .pth may be replaced by a .safetensors twin (`marionette convert-weights` writes them). Pickled
files are read with weights_only=True. Nothing is ever downloaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..base import EngineError
from .models import (GUIDERS, Networks, build_aniportrait_pose_guider, build_denoising_unet, build_pose_guider,
                     build_reference_unet, ddim_scheduler)

UNET_CONFIG = Path("stable-diffusion-v1-5") / "unet" / "config.json"
VAE_FOLDER = "sd-vae-ft-mse"
IMAGE_ENCODER_FOLDER = "image_encoder"
CHECKPOINTS = ("denoising_unet", "reference_unet", "pose_guider", "motion_module")

# Original AnimateDiff motion-module names -> diffusers names (the rules of diffusers' own converter).
_MOTION_RENAMES = (
    (".temporal_transformer", ""),
    (".attention_blocks.0", ".attn1"),
    (".attention_blocks.1", ".attn2"),
    (".norms.0", ".norm1"),
    (".norms.1", ".norm2"),
    (".ff_norm", ".norm3"),
)


class WeightsError(EngineError):
    """A weights folder that cannot be used; the message names the file."""


def motion_module_to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    converted = {}
    for key, value in state.items():
        if "pos_encoder" in key:
            continue  # diffusers computes the same sinusoidal table itself
        for old, new in _MOTION_RENAMES:
            key = key.replace(old, new)
        converted[key] = value
    return converted


def motion_module_from_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse mapping (to write the release layout, e.g. for tests and benchmarks)."""
    converted = {}
    for key, value in state.items():
        if "motion_modules" not in key or key.endswith(".pe"):
            continue
        key = re.sub(r"(motion_modules\.\d+)\.", r"\1.temporal_transformer.", key)
        for old, new in reversed(_MOTION_RENAMES[1:]):
            key = key.replace(new + ".", old + ".")
        converted[key] = value
    return converted


def find_checkpoint(folder: Path, stem: str) -> Path | None:
    """The checkpoint `stem` in folder: its .safetensors twin if there is one, else the .pth."""
    for suffix in (".safetensors", ".pth"):
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def checkpoint_path(folder: Path, stem: str) -> Path:
    path = find_checkpoint(folder, stem)
    if path is None:
        raise WeightsError(f"the weights folder {folder} has no {stem}.pth (or {stem}.safetensors)")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which one
        raise WeightsError(f"cannot read {path}: {error}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict")
    return state


def load_strict(module: torch.nn.Module, state: dict, source: str, ignore_missing=lambda key: False) -> None:
    """Load state into module; WeightsError naming `source` unless the keys and shapes match exactly
    (keys for which ignore_missing is true may be absent)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not ignore_missing(k)]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or mismatched:
        details = []
        if missing:
            details.append(f"missing {len(missing)} keys (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if mismatched:
            key = mismatched[0]
            details.append(f"{len(mismatched)} keys of another shape (e.g. {key}: {tuple(state[key].shape)} "
                           f"vs {tuple(expected[key].shape)} from the unet config)")
        raise WeightsError(f"{source} does not match the model: {'; '.join(details)}")
    module.load_state_dict(state, strict=False)


def own_memory(module: torch.nn.Module) -> None:
    """Copy weights that from_pretrained left in the file's memory map: mapped tensors can sit at
    unaligned addresses, where CPU kernels take other paths and results differ in the last bit."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.data = parameter.data.clone()


def read_unet_config(folder: Path, relative: Path = UNET_CONFIG) -> dict:
    path = folder / relative
    if not path.is_file():
        raise WeightsError(f"the weights folder {folder} has no {relative}")
    return json.loads(path.read_text())


def load_networks(folder: Path | str, guider: str = "animate-anyone") -> Networks:
    """All networks of the engine, on the CPU in float32, from a release-layout folder.
    `guider` says whose pose guider pose_guider.pth holds (the rest of the layout is shared)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionModelWithProjection

    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(f"the weights folder {folder} does not exist")
    config = read_unet_config(folder)
    for sub in (VAE_FOLDER, IMAGE_ENCODER_FOLDER):
        if not (folder / sub / "config.json").is_file():
            raise WeightsError(f"the weights folder {folder} has no {sub}/ (with its config.json)")
    try:
        vae = AutoencoderKL.from_pretrained(folder / VAE_FOLDER, local_files_only=True)
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(folder / IMAGE_ENCODER_FOLDER,
                                                                      local_files_only=True)
    except (OSError, ValueError) as error:
        raise WeightsError(f"cannot load {VAE_FOLDER}/ or {IMAGE_ENCODER_FOLDER}/ in {folder}: {error}") from None
    for module in (vae, image_encoder):
        own_memory(module)

    reference = build_reference_unet(config)
    path = checkpoint_path(folder, "reference_unet")
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(("conv_norm_out.", "conv_out."))}
    load_strict(reference, state, path.name)

    denoiser = build_denoising_unet(config)
    unet_path, motion_path = checkpoint_path(folder, "denoising_unet"), checkpoint_path(folder, "motion_module")
    spatial = read_state_dict(unet_path)
    motion = motion_module_to_diffusers(read_state_dict(motion_path))
    clash = set(spatial) & set(motion)
    if clash:
        raise WeightsError(f"{unet_path.name} and {motion_path.name} both set {sorted(clash)[0]}")
    load_strict(denoiser, {**spatial, **motion}, f"{unet_path.name} + {motion_path.name}",
                ignore_missing=lambda key: key.endswith(".pe"))

    path = checkpoint_path(folder, "pose_guider")
    state = read_state_dict(path)
    if guider == "aniportrait":
        width = state.get("cross_attn1.proj_in.weight")
        try:
            pose_guider = build_aniportrait_pose_guider(config, None if width is None else width.shape[0])
        except ValueError as error:
            raise WeightsError(f"{UNET_CONFIG}: {error}") from None
    elif guider == "animate-anyone":
        pose_guider = build_pose_guider(config)
    else:
        raise WeightsError(f"unknown pose guider '{guider}'; one of {', '.join(GUIDERS)}")
    load_strict(pose_guider, state, path.name)
    return Networks(vae, image_encoder, reference, denoiser, pose_guider, ddim_scheduler())


def save_release_layout(networks: Networks, unet_config: dict, folder: Path | str) -> None:
    """Write networks as the release lays them out (.pth files, original key names)."""
    folder = Path(folder)
    (folder / UNET_CONFIG).parent.mkdir(parents=True, exist_ok=True)
    (folder / UNET_CONFIG).write_text(json.dumps(dict(unet_config)))
    networks.vae.save_pretrained(folder / VAE_FOLDER)
    networks.image_encoder.save_pretrained(folder / IMAGE_ENCODER_FOLDER)
    torch.save(dict(networks.reference_unet.state_dict()), folder / "reference_unet.pth")
    denoiser = networks.denoising_unet.state_dict()
    torch.save({k: v for k, v in denoiser.items() if "motion_modules" not in k}, folder / "denoising_unet.pth")
    torch.save(motion_module_from_diffusers(denoiser), folder / "motion_module.pth")
    torch.save(dict(networks.pose_guider.state_dict()), folder / "pose_guider.pth")


def convert_to_safetensors(folder: Path | str) -> list[Path]:
    """Write a .safetensors twin of each released .pth (read with weights_only=True)."""
    folder = Path(folder)
    written = []
    for stem in CHECKPOINTS:
        source = folder / f"{stem}.pth"
        if not source.is_file():
            raise WeightsError(f"the weights folder {folder} has no {stem}.pth")
        state = {k: v.contiguous() for k, v in read_state_dict(source).items()}
        target = folder / f"{stem}.safetensors"
        save_file(state, str(target))
        written.append(target)
    return written
