"""Make the aniportrait goldens by running AniPortrait's own inference code, unmodified.

Run in an environment with the original's pinned packages (see README.md here), not the project's:

    python tests/backend/goldens/make_aniportrait.py --original /path/to/AniPortrait --out tests/backend/goldens/data

It builds tiny networks with the original's own classes, fills them with seeded weights (values
depend only on each tensor's release key name: seeded_weights.py), saves them in the release's
`pretrained_model/` layout, loads them back and runs `Pose2VideoPipeline` exactly as
`scripts/vid2vid.py` builds and calls it (the face-landmark extraction before it is replaced by the
maps saved here as inputs), on the CPU in float32. It records the pose guider's feature levels, every
denoiser call, every scheduler step and the frames, converted to uint8 as the original saves them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from recording import Recorder  # noqa: E402
from seeded_weights import seed_module  # noqa: E402
from tiny_animate_anyone import TINY_ANIPORTRAIT_CONFIG, TINY_VAE, tiny_clip  # noqa: E402

SEED = 0  # of the weights
CASES = {  # name: frames, width, height (6 frames: one window; 24: two windows, the second wrapping)
    "aniportrait_6": (6, 128, 128),
    "aniportrait_24": (24, 64, 128),  # the reference map's coarsest guider level keeps 2 values (BatchNorm)
}
STEPS, GUIDANCE, NOISE_SEED = 3, 3.5, 42


def import_shim() -> None:
    """The pipeline module imports torchvision.transforms but does not use it on this path; PyPI's
    torchvision does not install beside this machine's CPU torch build. The only shim: an empty
    module, put in place after diffusers has looked for torchvision (and found none)."""
    from diffusers import AutoencoderKL, DiffusionPipeline  # noqa: F401  (resolves diffusers' lazy imports)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        shim = types.ModuleType("torchvision")
        shim.transforms = types.ModuleType("torchvision.transforms")
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = shim, shim.transforms


def make_inputs(frames: int, width: int, height: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A reference image, and landmark-like maps: black with sparse coloured dots."""
    def sparse_map():
        image = np.zeros((height, width, 3), np.uint8)
        dots = rng.random((height, width)) < 0.06
        image[dots] = rng.integers(64, 256, (int(dots.sum()), 3), dtype=np.uint8)
        return image
    smooth = rng.integers(0, 256, (height // 8, width // 8, 3)).astype(np.uint8)
    reference = np.kron(smooth, np.ones((8, 8, 1), np.uint8)) // 2 + rng.integers(0, 128, (height, width, 3),
                                                                                  dtype=np.uint8)
    return {"reference": reference, "reference_pose": sparse_map(), "maps": np.stack([sparse_map()
                                                                                     for _ in range(frames)])}


def write_release_folder(folder: Path, unet_config: dict) -> dict[str, list[str]]:
    """The release's pretrained_model/ layout with seeded weights; the key names of each .pth."""
    from diffusers import AutoencoderKL
    from omegaconf import OmegaConf
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from src.models.pose_guider import PoseGuider
    from src.models.unet_2d_condition import UNet2DConditionModel
    from src.models.unet_3d import UNet3DConditionModel

    base = UNet2DConditionModel.from_config(unet_config)
    seed_module(base, SEED).save_pretrained(folder / "stable-diffusion-v1-5" / "unet")
    seed_module(AutoencoderKL(**TINY_VAE), SEED).save_pretrained(folder / "sd-vae-ft-mse")
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**tiny_clip(unet_config["cross_attention_dim"])))
    seed_module(clip, SEED).save_pretrained(folder / "image_encoder")

    infer_config = OmegaConf.load(ORIGINAL / "configs" / "inference" / "inference_v2.yaml")
    denoiser = UNet3DConditionModel.from_pretrained_2d(folder / "stable-diffusion-v1-5", "", subfolder="unet",
                                                       unet_additional_kwargs=infer_config.unet_additional_kwargs)
    # Positional encodings are computed, not learned: the release's motion module holds none.
    state = seed_module(denoiser, SEED, keep=lambda name: name.endswith(".pe")).state_dict()
    files = {
        "denoising_unet.pth": {k: v for k, v in state.items() if "motion_modules" not in k},
        "motion_module.pth": {k: v for k, v in state.items() if "motion_modules" in k and not k.endswith(".pe")},
        "reference_unet.pth": seed_module(UNet2DConditionModel.from_config(unet_config), SEED).state_dict(),
        "pose_guider.pth": seed_module(PoseGuider(noise_latent_channels=unet_config["block_out_channels"][0],
                                                  use_ca=True), SEED).state_dict(),
    }
    for name, file_state in files.items():
        torch.save(file_state, folder / name)
    return {name: sorted(file_state) for name, file_state in files.items()}


def load_pipeline(folder: Path, channels: int):
    """As scripts/vid2vid.py builds it (float32, CPU)."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from omegaconf import OmegaConf
    from transformers import CLIPVisionModelWithProjection

    from src.models.pose_guider import PoseGuider
    from src.models.unet_2d_condition import UNet2DConditionModel
    from src.models.unet_3d import UNet3DConditionModel
    from src.pipelines.pipeline_pose2vid_long import Pose2VideoPipeline

    dtype, device = torch.float32, "cpu"
    vae = AutoencoderKL.from_pretrained(folder / "sd-vae-ft-mse").to(device, dtype=dtype)
    reference_unet = UNet2DConditionModel.from_pretrained(folder / "stable-diffusion-v1-5",
                                                          subfolder="unet").to(dtype=dtype, device=device)
    infer_config = OmegaConf.load(ORIGINAL / "configs" / "inference" / "inference_v2.yaml")
    denoising_unet = UNet3DConditionModel.from_pretrained_2d(
        folder / "stable-diffusion-v1-5", folder / "motion_module.pth", subfolder="unet",
        unet_additional_kwargs=infer_config.unet_additional_kwargs).to(dtype=dtype, device=device)
    pose_guider = PoseGuider(noise_latent_channels=channels, use_ca=True).to(device=device, dtype=dtype)
    image_enc = CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder").to(dtype=dtype, device=device)
    scheduler = DDIMScheduler(**OmegaConf.to_container(infer_config.noise_scheduler_kwargs))
    denoising_unet.load_state_dict(torch.load(folder / "denoising_unet.pth", map_location="cpu"), strict=False)
    reference_unet.load_state_dict(torch.load(folder / "reference_unet.pth", map_location="cpu"))
    pose_guider.load_state_dict(torch.load(folder / "pose_guider.pth", map_location="cpu"))
    pipe = Pose2VideoPipeline(vae=vae, image_encoder=image_enc, reference_unet=reference_unet,
                              denoising_unet=denoising_unet, pose_guider=pose_guider, scheduler=scheduler)
    return pipe.to(device, dtype=dtype)


def run_case(pipe, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from PIL import Image

    frames, height, width = inputs["maps"].shape[:3]
    recorder = Recorder()
    recorder.watch(pipe.image_encoder, "clip", lambda i, o: o.image_embeds)
    recorder.watch(pipe.reference_unet, "reference_latents", lambda i, o: i[0][:1])
    recorder.watch(pipe.pose_guider, "guider", lambda i, o: [level[0] for level in o])  # halves are equal
    recorder.watch(pipe.denoising_unet, "denoiser", lambda i, o: o[0])
    recorder.watch_steps(pipe.scheduler)
    generator = torch.manual_seed(NOISE_SEED)
    video = pipe(Image.fromarray(inputs["reference"]), inputs["maps"], inputs["reference_pose"], width, height,
                 frames, STEPS, GUIDANCE, generator=generator).videos
    # As src/utils/util.py save_videos_grid converts a frame: (x * 255).numpy().astype(np.uint8).
    saved = (video[0].permute(1, 2, 3, 0) * 255).numpy().astype(np.uint8)
    arrays = recorder.arrays()
    windows = len(recorder.calls["denoiser"]) // STEPS
    # The guider sees the same batches at every step: keep the first step's windows.
    arrays = {k: v for k, v in arrays.items() if not k.startswith("guider/") or int(k.split("/")[1]) < windows}
    return {**{f"input/{k}": v for k, v in inputs.items()}, **arrays, "frames": saved}


def main() -> None:
    global ORIGINAL
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--original", type=Path, required=True, help="a checkout of Zejun-Yang/AniPortrait")
    parser.add_argument("--out", type=Path, default=HERE / "data")
    args = parser.parse_args()
    ORIGINAL = args.original.resolve()
    sys.path.insert(0, str(ORIGINAL))
    import_shim()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    config = dict(TINY_ANIPORTRAIT_CONFIG)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "pretrained_model"
        keys = write_release_folder(folder, config)
        pipe = load_pipeline(folder, config["block_out_channels"][0])
        rng = np.random.default_rng(2026)
        for name, (frames, width, height) in CASES.items():
            arrays = run_case(pipe, make_inputs(frames, width, height, rng))
            np.savez_compressed(args.out / f"{name}.npz", **arrays)
            print(name, {k: v.shape for k, v in arrays.items() if not k.startswith(("guider", "denoiser", "step"))})
    settings = {"weights_seed": SEED, "steps": STEPS, "guidance": GUIDANCE, "seed": NOISE_SEED,
                "cases": CASES, "unet_config": config, "release_keys": keys}
    (args.out / "aniportrait.json").write_text(json.dumps(settings, indent=1) + "\n")


if __name__ == "__main__":
    main()
