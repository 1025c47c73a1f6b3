"""Loading EchoMimic v1's released weights from a folder laid out like its `pretrained_weights/`.

    sd-image-variations-diffusers/unet/config.json   sizes the ReferenceNet and the denoiser
    sd-image-variations-diffusers/unet/diffusion_pytorch_model.{safetensors,bin}
                                   optional: fills denoiser weights the checkpoints below lack,
                                   as the release builds its denoiser on them
    sd-vae-ft-mse/                 diffusers AutoencoderKL folder
    audio_processor/whisper_tiny.pt   OpenAI Whisper-tiny checkpoint {"dims", "model_state_dict"}
    then, per mode (the release's configs/prompts/animation*.yaml):

                         denoiser                 motion modules           ReferenceNet          face locator
    audio                denoising_unet           motion_module            reference_unet        face_locator
    audio, accelerated   denoising_unet_acc       motion_module_acc        reference_unet        face_locator
    pose                 denoising_unet_pose      motion_module_pose       reference_unet_pose   face_locator_pose
    pose, accelerated    denoising_unet_pose_acc  motion_module_pose_acc   reference_unet_pose   face_locator_pose

Each is a .pth (read with weights_only=True) or its .safetensors twin. Key names: the ReferenceNet,
the face locator and the denoiser's spatial layers use diffusers' names (the denoiser's own 3D
classes keep the 2D names); the motion modules use the original AnimateDiff names, mapped by the
shared rules (marionette.models.checkpoints). As in the release, the denoiser's checkpoint wins over the motion
modules' where both set a key, and keys it holds that the model lacks are ignored (the release
loads it with strict=False); every other file must match its network exactly.
Nothing is ever downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from ...models.checkpoints import (WeightsError, find_checkpoint, load_strict, motion_module_from_diffusers,
                                   motion_module_to_diffusers, own_memory, read_state_dict, read_unet_config)
from ...models.unets import ddim_scheduler
from .audio_features import load_whisper_encoder
from .models import (MODES, EchoMimicNetworks, build_echomimic_denoising_unet, build_echomimic_reference_unet,
                     build_face_locator)

BASE_UNET_FOLDER = Path("sd-image-variations-diffusers") / "unet"
UNET_CONFIG = BASE_UNET_FOLDER / "config.json"
BASE_UNET_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
VAE_FOLDER = "sd-vae-ft-mse"
WHISPER_CHECKPOINT = Path("audio_processor") / "whisper_tiny.pt"


@dataclass(frozen=True)
class ReleaseFiles:
    """File stems (no suffix) of one released variant."""

    denoising_unet: str
    motion_module: str
    reference_unet: str
    face_locator: str

    def stems(self) -> tuple[str, ...]:
        return (self.denoising_unet, self.motion_module, self.reference_unet, self.face_locator)


RELEASE_FILES = {
    ("audio", False): ReleaseFiles("denoising_unet", "motion_module", "reference_unet", "face_locator"),
    ("audio", True): ReleaseFiles("denoising_unet_acc", "motion_module_acc", "reference_unet", "face_locator"),
    ("pose", False): ReleaseFiles("denoising_unet_pose", "motion_module_pose", "reference_unet_pose",
                                  "face_locator_pose"),
    ("pose", True): ReleaseFiles("denoising_unet_pose_acc", "motion_module_pose_acc", "reference_unet_pose",
                                 "face_locator_pose"),
}
VARIANT_NAMES = {("audio", False): "audio-driven", ("audio", True): "accelerated audio-driven",
                 ("pose", False): "pose (landmark) driven", ("pose", True): "accelerated pose (landmark) driven"}


def release_files(mode: str, accelerated: bool) -> ReleaseFiles:
    if mode not in MODES:
        raise WeightsError(f"unknown EchoMimic mode '{mode}'; one of {', '.join(MODES)}")
    return RELEASE_FILES[(mode, bool(accelerated))]


def check_folder(folder: Path | str, mode: str = "audio", accelerated: bool = False) -> dict[str, Path]:
    """The paths of every file the variant needs, checked before anything is read; WeightsError
    naming each missing one otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(f"the EchoMimic weights folder {folder} does not exist")
    files = release_files(mode, accelerated)
    found: dict[str, Path] = {}
    missing: list[str] = []
    for relative in (UNET_CONFIG, Path(VAE_FOLDER) / "config.json", WHISPER_CHECKPOINT):
        if (folder / relative).is_file():
            found[str(relative)] = folder / relative
        else:
            missing.append(str(relative))
    for stem in files.stems():
        path = find_checkpoint(folder, stem)
        if path is None:
            missing.append(f"{stem}.pth (or {stem}.safetensors)")
        else:
            found[stem] = path
    if missing:
        raise WeightsError(f"the EchoMimic weights folder {folder} has no {', '.join(missing)}; the "
                           f"{VARIANT_NAMES[(mode, bool(accelerated))]} variant needs them: put the released "
                           "pretrained_weights/ files there")
    return found


def _base_unet_state(folder: Path) -> dict[str, torch.Tensor] | None:
    for name in BASE_UNET_WEIGHTS:
        path = folder / BASE_UNET_FOLDER / name
        if path.is_file():
            return read_state_dict(path)
    return None


def denoiser_state(model_state: dict[str, torch.Tensor], denoising: dict[str, torch.Tensor],
                   motion: dict[str, torch.Tensor], base: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """The denoiser's weights as the release assembles them: the base UNet's where their shapes fit
    (only when given), the motion modules over them, the denoiser checkpoint over both; keys the
    model does not have are dropped. Checkpoint keys in AnimateDiff names are mapped to diffusers'."""
    merged: dict[str, torch.Tensor] = {}
    if base is not None:
        merged.update({k: v for k, v in base.items()
                       if k in model_state and tuple(v.shape) == tuple(model_state[k].shape)})
    merged.update(motion_module_to_diffusers(motion))
    merged.update({k: v for k, v in motion_module_to_diffusers(denoising).items() if k in model_state})
    return merged


def load_networks(folder: Path | str, mode: str = "audio", accelerated: bool = False) -> EchoMimicNetworks:
    """All EchoMimic networks of one released variant, on the CPU in float32."""
    folder = Path(folder)
    files = release_files(mode, accelerated)
    paths = check_folder(folder, mode, accelerated)
    config = read_unet_config(folder, UNET_CONFIG)
    try:
        audio_encoder = load_whisper_encoder(paths[str(WHISPER_CHECKPOINT)])
    except Exception as error:  # a truncated or foreign file: say which one
        raise WeightsError(f"cannot use {WHISPER_CHECKPOINT} in {folder}: {error}") from None
    try:
        vae = AutoencoderKL.from_pretrained(folder / VAE_FOLDER, local_files_only=True)
    except (OSError, ValueError) as error:
        raise WeightsError(f"cannot load {VAE_FOLDER}/ in {folder}: {error}") from None
    own_memory(vae)

    reference = build_echomimic_reference_unet(config)
    path = paths[files.reference_unet]
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(("conv_norm_out.", "conv_out."))}
    load_strict(reference, state, path.name)

    denoiser = build_echomimic_denoising_unet(config, audio_encoder.width)
    unet_path, motion_path = paths[files.denoising_unet], paths[files.motion_module]
    expected = denoiser.state_dict()
    denoising, motion = read_state_dict(unet_path), read_state_dict(motion_path)
    state = denoiser_state(expected, denoising, motion, None)
    source = f"{unet_path.name} + {motion_path.name}"
    missing = [k for k in expected if k not in state and not k.endswith(".pe")]
    if missing:
        base = _base_unet_state(folder)
        if base is None:
            raise WeightsError(f"{source} lack {len(missing)} of the denoiser's weights (e.g. {missing[0]}); the "
                               f"release takes them from {BASE_UNET_FOLDER}/{BASE_UNET_WEIGHTS[0]} (or .bin), "
                               f"which {folder} does not have: put the sd-image-variations-diffusers UNet weights there")
        state = denoiser_state(expected, denoising, motion, base)
        source += f" + {BASE_UNET_FOLDER}"
    load_strict(denoiser, state, source, ignore_missing=lambda key: key.endswith(".pe"))

    face_locator = build_face_locator(config, mode)
    path = paths[files.face_locator]
    load_strict(face_locator, read_state_dict(path), path.name)
    return EchoMimicNetworks(vae, reference, denoiser, face_locator, audio_encoder, ddim_scheduler(), mode,
                             bool(accelerated))


def save_release_layout(networks: EchoMimicNetworks, unet_config: dict, folder: Path | str) -> None:
    """Write the diffusion networks as the release lays them out for their mode (.pth files,
    original key names; the denoiser's checkpoint without motion modules), the UNet config and the
    VAE folder. The Whisper checkpoint is the caller's (OpenAI's file, written as OpenAI writes it)."""
    folder = Path(folder)
    files = release_files(networks.mode, networks.accelerated)
    (folder / UNET_CONFIG).parent.mkdir(parents=True, exist_ok=True)
    (folder / UNET_CONFIG).write_text(json.dumps(dict(unet_config)))
    networks.vae.save_pretrained(folder / VAE_FOLDER)
    torch.save(dict(networks.reference_unet.state_dict()), folder / f"{files.reference_unet}.pth")
    denoiser = networks.denoising_unet.state_dict()
    torch.save({k: v for k, v in denoiser.items() if "motion_modules" not in k}, folder / f"{files.denoising_unet}.pth")
    torch.save(motion_module_from_diffusers(denoiser), folder / f"{files.motion_module}.pth")
    torch.save(dict(networks.face_locator.state_dict()), folder / f"{files.face_locator}.pth")

