"""The weights folder of the animate-anyone and aniportrait engines, laid out like the release's
`pretrained_weights/`:

    stable-diffusion-v1-5/unet/config.json   only the config is read: it sizes every network
    sd-vae-ft-mse/                            diffusers AutoencoderKL folder
    image_encoder/                            transformers CLIPVisionModelWithProjection folder
    denoising_unet.pth    SD UNet key names (no motion modules)
    reference_unet.pth    SD UNet key names (the output head's keys, if present, are not used)
    pose_guider.pth       Moore: ControlNetConditioningEmbedding key names; AniPortrait: its PoseGuider's
    motion_module.pth     original AnimateDiff key names (mapped by marionette.models.checkpoints)
Each .pth may be replaced by a .safetensors twin (`marionette convert-weights` writes them). Pickled
files are read with weights_only=True. Nothing is ever downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from transformers import CLIPVisionModelWithProjection

from ...models.checkpoints import (WeightsError, checkpoint_path, find_checkpoint, load_strict,
                                   motion_module_from_diffusers, motion_module_to_diffusers, own_memory,
                                   read_state_dict, read_unet_config)
from ...models.unets import build_denoising_unet, build_pose_guider, build_reference_unet, ddim_scheduler
from .models import GUIDERS, Networks, build_aniportrait_pose_guider

UNET_CONFIG = Path("stable-diffusion-v1-5") / "unet" / "config.json"
VAE_FOLDER = "sd-vae-ft-mse"
IMAGE_ENCODER_FOLDER = "image_encoder"
CHECKPOINTS = ("denoising_unet", "reference_unet", "pose_guider", "motion_module")


def check_folder(folder: Path | str) -> Path:
    """The folder, if every file the engine reads is there; WeightsError naming each missing one."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise WeightsError(f"the weights folder {folder} does not exist")
    missing = [str(relative) for relative in (UNET_CONFIG, Path(VAE_FOLDER) / "config.json",
                                              Path(IMAGE_ENCODER_FOLDER) / "config.json")
               if not (folder / relative).is_file()]
    missing += [f"{stem}.pth (or {stem}.safetensors)" for stem in CHECKPOINTS if find_checkpoint(folder, stem) is None]
    if missing:
        raise WeightsError(f"the weights folder {folder} has no {', '.join(missing)}; put the release's "
                           f"pretrained_weights/ files there")
    return folder


def load_networks(folder: Path | str, guider: str = "animate-anyone") -> Networks:
    """All networks of the engine, on the CPU in float32, from a release-layout folder.
    `guider` says whose pose guider pose_guider.pth holds (the rest of the layout is shared)."""
    folder = check_folder(folder)
    config = read_unet_config(folder, UNET_CONFIG)
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
