"""Make the echomimic goldens by running EchoMimic's own inference code, unmodified.

Run in an environment with the original's pinned packages (see README.md here), not the project's:

    python tests/backend/goldens/make_echomimic.py --original /path/to/echomimic --out tests/backend/goldens/data

For each of the release's four variants (audio, audio accelerated, pose, pose accelerated) it builds
tiny networks with the original's own classes, fills them with seeded weights (seeded_weights.py;
each checkpoint file its own seed), saves them in the release's `pretrained_weights/` layout, loads
them back and runs the pipeline exactly as `infer_audio2vid.py`, `infer_audio2vid_acc.py`,
`infer_audio2vid_pose.py` and `infer_audio2vid_pose_acc.py` build and call it, on the CPU in float32.
What those scripts do before the pipeline (face detection and cropping, reading landmark files,
decoding the audio file with ffmpeg) is replaced by the inputs saved here: a face mask, landmark maps,
and the 16 kHz waveform, which the vendored Whisper's transcribe takes in place of a path. Recorded:
the audio features, the face locator's output, every denoiser call, every scheduler step, and the
frames, converted to uint8 as the original saves them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from recording import Recorder  # noqa: E402
from seeded_weights import file_seed, seed_module, seeded_state  # noqa: E402
from tiny_animate_anyone import TINY_UNET_CONFIG, TINY_VAE  # noqa: E402

SEED = 0
# Whisper-tiny's encoder width (384: Audio2Feature reshapes to it) and heads, fewer layers; a text
# decoder as small as the checkpoint format allows (the vendored transcribe never runs it).
WHISPER_DIMS = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6, "n_audio_layer": 2,
                "n_vocab": 16, "n_text_ctx": 4, "n_text_state": 384, "n_text_head": 6, "n_text_layer": 1}
VARIANTS = {  # name: (script's pipeline module, class, release file stems, steps, guidance, face channels)
    "echomimic_audio": ("pipeline_echo_mimic", "Audio2VideoPipeline",
                        ("denoising_unet", "motion_module", "reference_unet", "face_locator"), 3, 2.5, 1),
    "echomimic_audio_acc": ("pipeline_echo_mimic_acc", "Audio2VideoPipeline",
                            ("denoising_unet_acc", "motion_module_acc", "reference_unet", "face_locator"), 3, 1.0, 1),
    "echomimic_pose": ("pipeline_echo_mimic_pose", "AudioPose2VideoPipeline",
                       ("denoising_unet_pose", "motion_module_pose", "reference_unet_pose", "face_locator_pose"),
                       3, 2.5, 3),
    "echomimic_pose_acc": ("pipeline_echo_mimic_pose_acc", "AudioPose2VideoPipeline",
                           ("denoising_unet_pose_acc", "motion_module_pose_acc", "reference_unet_pose",
                            "face_locator_pose"), 3, 1.0, 3),
}
# 16 frames: two windows of 12 (overlap 3). 96 px: the denoiser's coarsest blocks keep 2x2 values, so
# that their GroupNorms (2 channels a group at this width) do not normalise over 2 values only.
FRAMES, WIDTH, HEIGHT, FPS, NOISE_SEED = 16, 96, 96, 24, 420


def make_inputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A reference portrait, a face-box mask, landmark-like maps, and 1 s of speech-like audio."""
    smooth = rng.integers(0, 256, (HEIGHT // 8, WIDTH // 8, 3)).astype(np.uint8)
    reference = np.kron(smooth, np.ones((8, 8, 1), np.uint8)) // 2 + rng.integers(0, 128, (HEIGHT, WIDTH, 3),
                                                                                  dtype=np.uint8)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[HEIGHT // 8:HEIGHT * 3 // 4, WIDTH // 4:WIDTH * 3 // 4] = 255

    def sparse_map():
        image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        dots = rng.random((HEIGHT, WIDTH)) < 0.08
        image[dots] = rng.integers(64, 256, (int(dots.sum()), 3), dtype=np.uint8)
        return image
    t = np.arange(16000) / 16000
    voice = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 910, 2300), start=1))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    # 16-bit samples, as a WAV file holds them (and the original's ffmpeg reading gives: int16 / 32768),
    # so that the engine can be run on the same sound from a file.
    audio = np.round((0.3 * envelope * voice + 0.02 * rng.standard_normal(t.shape)) * 32768) / 32768
    audio = audio.astype(np.float32)
    return {"reference": reference, "face_mask": mask, "maps": np.stack([sparse_map() for _ in range(FRAMES)]),
            "audio": audio}


def write_release_folder(folder: Path) -> dict[str, list[str]]:
    """One pretrained_weights/ folder holding all four variants; the key names of each .pth."""
    from diffusers import AutoencoderKL
    from omegaconf import OmegaConf

    from src.models.face_locator import FaceLocator
    from src.models.unet_2d_condition import UNet2DConditionModel
    from src.models.unet_3d_echo import EchoUNet3DConditionModel

    config = dict(TINY_UNET_CONFIG)
    base = folder / "sd-image-variations-diffusers"
    seed_module(UNet2DConditionModel.from_config(config), SEED).save_pretrained(base / "unet")
    seed_module(AutoencoderKL(**TINY_VAE), SEED).save_pretrained(folder / "sd-vae-ft-mse")
    (folder / "audio_processor").mkdir()
    whisper = {"dims": WHISPER_DIMS, "model_state_dict": seeded_state(whisper_state_shapes(), SEED)}
    torch.save(whisper, folder / "audio_processor" / "whisper_tiny.pt")

    infer_config = OmegaConf.load(ORIGINAL / "configs" / "inference" / "inference_v2.yaml")
    keys = {}
    for _module, _cls, (denoiser, motion, reference, locator), *_rest, channels in VARIANTS.values():
        unet = EchoUNet3DConditionModel.from_pretrained_2d(base, "", subfolder="unet",
                                                           unet_additional_kwargs=infer_config.unet_additional_kwargs)
        state = unet.state_dict()  # positional encodings are computed, not learned: the release holds none
        spatial = seeded_state({k: v for k, v in state.items() if "motion_modules" not in k},
                               file_seed(SEED, denoiser))
        temporal = seeded_state({k: v for k, v in state.items() if "motion_modules" in k and not k.endswith(".pe")},
                                file_seed(SEED, motion))
        files = {denoiser: spatial, motion: temporal,
                 reference: seeded_state(UNet2DConditionModel.from_config(config).state_dict(),
                                         file_seed(SEED, reference)),
                 locator: seeded_state(FaceLocator(config["block_out_channels"][0], conditioning_channels=channels,
                                                   block_out_channels=(16, 32, 96, 256)).state_dict(),
                                       file_seed(SEED, locator))}
        for stem, file_state in files.items():
            torch.save(file_state, folder / f"{stem}.pth")
            keys[f"{stem}.pth"] = sorted(file_state)
    return keys


def whisper_state_shapes() -> dict:
    """The vendored Whisper model's state dict (its own class), for the seeded values."""
    from src.models.whisper.whisper.model import ModelDimensions, Whisper

    return Whisper(ModelDimensions(**WHISPER_DIMS)).state_dict()


def cpu_shim() -> None:
    """The one adaptation: the reference-attention hooks take their device from a default argument
    that says CUDA; on this CPU-only machine that default becomes the CPU (no code is changed)."""
    from src.models.mutual_self_attention import ReferenceAttentionControl

    hooks = ReferenceAttentionControl.register_reference_hooks
    hooks.__defaults__ = tuple(torch.device("cpu") if isinstance(value, torch.device) else value
                               for value in hooks.__defaults__)


def load_pipeline(folder: Path, variant: str):
    """As the variant's infer_audio2vid*.py builds it (float32, CPU)."""
    import importlib

    from diffusers import AutoencoderKL, DDIMScheduler
    from omegaconf import OmegaConf

    from src.models.face_locator import FaceLocator
    from src.models.unet_2d_condition import UNet2DConditionModel
    from src.models.unet_3d_echo import EchoUNet3DConditionModel
    from src.models.whisper.audio2feature import load_audio_model

    module, cls, (denoiser, motion, reference, locator), _steps, _guidance, channels = VARIANTS[variant]
    dtype, device = torch.float32, "cpu"
    infer_config = OmegaConf.load(ORIGINAL / "configs" / "inference" / "inference_v2.yaml")
    base = folder / "sd-image-variations-diffusers"
    vae = AutoencoderKL.from_pretrained(folder / "sd-vae-ft-mse").to(device, dtype=dtype)
    reference_unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet").to(dtype=dtype, device=device)
    reference_unet.load_state_dict(torch.load(folder / f"{reference}.pth", map_location="cpu"))
    denoising_unet = EchoUNet3DConditionModel.from_pretrained_2d(
        base, folder / f"{motion}.pth", subfolder="unet",
        unet_additional_kwargs=infer_config.unet_additional_kwargs).to(dtype=dtype, device=device)
    denoising_unet.load_state_dict(torch.load(folder / f"{denoiser}.pth", map_location="cpu"), strict=False)
    face_locator = FaceLocator(TINY_UNET_CONFIG["block_out_channels"][0], conditioning_channels=channels,
                               block_out_channels=(16, 32, 96, 256)).to(dtype=dtype, device=device)
    face_locator.load_state_dict(torch.load(folder / f"{locator}.pth"))
    audio_processor = load_audio_model(model_path=str(folder / "audio_processor" / "whisper_tiny.pt"), device=device)
    scheduler = DDIMScheduler(**OmegaConf.to_container(infer_config.noise_scheduler_kwargs))
    pipeline_class = getattr(importlib.import_module(f"src.pipelines.{module}"), cls)
    pipe = pipeline_class(vae=vae, reference_unet=reference_unet, denoising_unet=denoising_unet,
                          audio_guider=audio_processor, face_locator=face_locator, scheduler=scheduler)
    return pipe.to(device, dtype=dtype)


def run_case(pipe, variant: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from PIL import Image

    _module, _cls, _files, steps, guidance, channels = VARIANTS[variant]
    recorder = Recorder()
    if variant == "echomimic_audio":  # the same audio and Whisper weights in every variant: kept once
        recorder.watch_method(pipe.audio_guider, "feature2chunks", "audio_features", lambda chunks: chunks[:FRAMES])
    recorder.watch(pipe.face_locator, "face_locator")
    recorder.watch(pipe.denoising_unet, "denoiser", lambda i, o: o[0])
    recorder.watch_steps(pipe.scheduler)
    generator = torch.manual_seed(NOISE_SEED)
    if channels == 1:  # infer_audio2vid*.py: the mask as (1, 1, 1, H, W) in [0, 1]
        face = torch.Tensor(inputs["face_mask"]).unsqueeze(0).unsqueeze(0).unsqueeze(0) / 255.0
    else:  # infer_audio2vid_pose*.py: each map (3, H, W) / 255, stacked along frames, (1, 3, F, H, W)
        face = torch.stack([torch.Tensor(m).permute(2, 0, 1) / 255.0 for m in inputs["maps"]], dim=1).unsqueeze(0)
    video = pipe(Image.fromarray(inputs["reference"]), inputs["audio"], face, WIDTH, HEIGHT, FRAMES, steps,
                 guidance, generator=generator, audio_sample_rate=16000, context_frames=12, fps=FPS,
                 context_overlap=3).videos
    saved = (video[0].permute(1, 2, 3, 0) * 255).numpy().astype(np.uint8)  # as save_videos_grid converts
    used = {"reference", "audio", "face_mask" if channels == 1 else "maps"}
    return {**{f"input/{k}": v for k, v in inputs.items() if k in used}, **recorder.arrays(), "frames": saved}


def main() -> None:
    global ORIGINAL
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--original", type=Path, required=True, help="a checkout of antgroup/echomimic")
    parser.add_argument("--out", type=Path, default=HERE / "data")
    args = parser.parse_args()
    ORIGINAL = args.original.resolve()
    sys.path.insert(0, str(ORIGINAL))
    cpu_shim()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    inputs = make_inputs(np.random.default_rng(2027))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "pretrained_weights"
        folder.mkdir()
        keys = write_release_folder(folder)
        for variant in VARIANTS:
            arrays = run_case(load_pipeline(folder, variant), variant, inputs)
            np.savez_compressed(args.out / f"{variant}.npz", **arrays)
            print(variant, {k: v.shape for k, v in arrays.items() if k.split("/")[0] in ("input", "frames",
                                                                                       "audio_features")})
    settings = {"weights_seed": SEED, "whisper_dims": WHISPER_DIMS, "unet_config": TINY_UNET_CONFIG,
                "frames": FRAMES, "width": WIDTH, "height": HEIGHT, "fps": FPS, "seed": NOISE_SEED,
                "variants": {name: {"files": list(v[2]), "steps": v[3], "guidance": v[4]}
                             for name, v in VARIANTS.items()}, "release_keys": keys}
    (args.out / "echomimic.json").write_text(json.dumps(settings, indent=1) + "\n")


if __name__ == "__main__":
    main()
