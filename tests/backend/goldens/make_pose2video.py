"""Make the aniportrait and animate-anyone goldens by running the originals' own inference code,
unmodified: AniPortrait's and Moore-AnimateAnyone's `Pose2VideoPipeline` (the long-video one).

Run in an environment with the originals' pinned packages (see README.md here), not the project's:

    python tests/backend/goldens/make_pose2video.py aniportrait --original /path/to/AniPortrait
    python tests/backend/goldens/make_pose2video.py animate-anyone --original /path/to/Moore-AnimateAnyone

It builds tiny networks with the original's own classes, fills them with seeded weights (values
depend only on each tensor's release key name: seeded_weights.py), saves them in the release's
`pretrained_model/` layout, loads them back and runs the pipeline exactly as the original's script
builds and calls it (AniPortrait's `scripts/vid2vid.py`, Moore's `scripts/pose2vid.py`; what comes
before the pipeline there, landmark extraction or reading a pose video, is replaced by the maps saved
here as inputs), on the CPU in float32. It records the pose guider's output, every denoiser call,
every scheduler step and the frames, converted to uint8 as the originals save them.
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
from tiny_animate_anyone import TINY_ANIPORTRAIT_CONFIG, TINY_UNET_CONFIG, TINY_VAE, tiny_clip  # noqa: E402

SEED = 0  # of the weights
ORIGINALS = {
    "aniportrait": {
        "unet_config": TINY_ANIPORTRAIT_CONFIG,  # its guider needs widths C, 2C, 4C, 4C
        # name: frames, width, height. 6 frames: one window of 16; 24: two, the second wrapping
        # around. 128 px high: the reference map's coarsest guider level keeps 2 values (BatchNorm).
        "cases": {"aniportrait_6": (6, 128, 128), "aniportrait_24": (24, 64, 128)},
    },
    "animate-anyone": {
        "unet_config": TINY_UNET_CONFIG,
        # One window of 24 (the loop is AniPortrait's, whose goldens cover several). 96 px: the
        # denoiser's coarsest blocks keep 2x2 values for their GroupNorms of 2 channels a group.
        "cases": {"animate_anyone_8": (8, 96, 96)},
    },
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


def build_pose_guider(original: str, channels: int):
    """As the original's script builds it."""
    from src.models.pose_guider import PoseGuider

    if original == "aniportrait":
        return PoseGuider(noise_latent_channels=channels, use_ca=True)
    return PoseGuider(channels, block_out_channels=(16, 32, 96, 256))


def write_release_folder(folder: Path, unet_config: dict, original: str) -> dict[str, list[str]]:
    """The release's pretrained_model/ layout with seeded weights; the key names of each .pth."""
    from diffusers import AutoencoderKL
    from omegaconf import OmegaConf
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

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
        "pose_guider.pth": seed_module(build_pose_guider(original, unet_config["block_out_channels"][0]),
                                       SEED).state_dict(),
    }
    for name, file_state in files.items():
        torch.save(file_state, folder / name)
    return {name: sorted(file_state) for name, file_state in files.items()}


def load_pipeline(folder: Path, channels: int, original: str):
    """As the original's script builds it (float32, CPU)."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from omegaconf import OmegaConf
    from transformers import CLIPVisionModelWithProjection

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
    pose_guider = build_pose_guider(original, channels).to(device=device, dtype=dtype)
    image_enc = CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder").to(dtype=dtype, device=device)
    scheduler = DDIMScheduler(**OmegaConf.to_container(infer_config.noise_scheduler_kwargs))
    denoising_unet.load_state_dict(torch.load(folder / "denoising_unet.pth", map_location="cpu"), strict=False)
    reference_unet.load_state_dict(torch.load(folder / "reference_unet.pth", map_location="cpu"))
    pose_guider.load_state_dict(torch.load(folder / "pose_guider.pth", map_location="cpu"))
    pipe = Pose2VideoPipeline(vae=vae, image_encoder=image_enc, reference_unet=reference_unet,
                              denoising_unet=denoising_unet, pose_guider=pose_guider, scheduler=scheduler)
    return pipe.to(device, dtype=dtype)


def run_case(pipe, inputs: dict[str, np.ndarray], original: str) -> dict[str, np.ndarray]:
    from PIL import Image

    frames, height, width = inputs["maps"].shape[:3]
    recorder = Recorder()
    recorder.watch(pipe.image_encoder, "clip", lambda i, o: o.image_embeds)
    recorder.watch(pipe.reference_unet, "reference_latents", lambda i, o: i[0][:1])
    if original == "aniportrait":  # five levels, each (2, C, frames, h, w); the guidance halves are equal
        recorder.watch(pipe.pose_guider, "guider", lambda i, o: [level[0] for level in o])
    else:  # one level, (1, C, frames, h, w) for the whole clip
        recorder.watch(pipe.pose_guider, "guider", lambda i, o: [o[0]])
    recorder.watch(pipe.denoising_unet, "denoiser", lambda i, o: o[0])
    recorder.watch_steps(pipe.scheduler)
    generator = torch.manual_seed(NOISE_SEED)
    if original == "aniportrait":  # scripts/vid2vid.py: the maps as a numpy array, and the reference's map
        video = pipe(Image.fromarray(inputs["reference"]), inputs["maps"], inputs["reference_pose"], width, height,
                     frames, STEPS, GUIDANCE, generator=generator).videos
    else:  # scripts/pose2vid.py: the maps as PIL images (frames of the pose video)
        video = pipe(Image.fromarray(inputs["reference"]), [Image.fromarray(m) for m in inputs["maps"]], width,
                     height, frames, STEPS, GUIDANCE, generator=generator).videos
    # As src/utils/util.py save_videos_grid converts a frame: (x * 255).numpy().astype(np.uint8).
    saved = (video[0].permute(1, 2, 3, 0) * 255).numpy().astype(np.uint8)
    arrays = recorder.arrays()
    windows = len(recorder.calls["denoiser"]) // STEPS
    # The guider sees the same batches at every step: keep the first step's windows.
    arrays = {k: v for k, v in arrays.items() if not k.startswith("guider/") or int(k.split("/")[1]) < windows}
    if original != "aniportrait":
        inputs = {k: v for k, v in inputs.items() if k != "reference_pose"}
    return {**{f"input/{k}": v for k, v in inputs.items()}, **arrays, "frames": saved}


def main() -> None:
    global ORIGINAL
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=ORIGINALS)
    parser.add_argument("--original", type=Path, required=True,
                        help="a checkout of Zejun-Yang/AniPortrait or MooreThreads/Moore-AnimateAnyone")
    parser.add_argument("--out", type=Path, default=HERE / "data")
    args = parser.parse_args()
    ORIGINAL = args.original.resolve()
    sys.path.insert(0, str(ORIGINAL))
    import_shim()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    spec = ORIGINALS[args.name]
    config = dict(spec["unet_config"])
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "pretrained_model"
        keys = write_release_folder(folder, config, args.name)
        pipe = load_pipeline(folder, config["block_out_channels"][0], args.name)
        rng = np.random.default_rng(2026)
        for name, (frames, width, height) in spec["cases"].items():
            arrays = run_case(pipe, make_inputs(frames, width, height, rng), args.name)
            np.savez_compressed(args.out / f"{name}.npz", **arrays)
            print(name, {k: v.shape for k, v in arrays.items() if not k.startswith(("guider", "denoiser", "step"))})
    settings = {"weights_seed": SEED, "steps": STEPS, "guidance": GUIDANCE, "seed": NOISE_SEED,
                "cases": spec["cases"], "unet_config": config, "release_keys": keys}
    (args.out / f"{args.name.replace('-', '_')}.json").write_text(json.dumps(settings, indent=1) + "\n")


if __name__ == "__main__":
    main()
