"""The `wan-animate-2` engine: Wan-Animate-2 14B (base or distilled, diffusers' modular pipelines)
moving the reference character the way the driving video's performer moves. From Blender the driving
video is the performance rendered through the scene camera (the scene itself, a mannequin built from
the armature, or the pose maps).

Frames stream out segment by segment as each is decoded; a resumed job carries on from its first
missing frame with the state kept in the job's folder.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import torch

from ...color_match import MODES as COLOR_MODES
from ...color_match import ColorMatch
from ...models.devices import DEVICE_SETTINGS, default_device, device_and_dtype
from ...models.placement import PLACEMENT_SETTINGS, check_placement, placement_of
from ..base import ENGINE_MODELS, EngineError, EngineInfo, EngineInput, JobInputs
from .pipeline import CARRY_CHOICES, DEFAULT_PROMPT, SIZE_MULTIPLE, check_plan, generate_segments
from ...fetching import check_naming_fetch
from .weights import WanAnimate2Error, check_weights_folder, load_pipeline, set_guidance

# The release's sampling, per variant: steps and classifier-free guidance scale.
DEFAULT_STEPS = {"base": 40, "distilled": 10}
DEFAULT_GUIDANCE = {"base": 3.0, "distilled": 1.0}


class WanAnimate2Engine:
    info = EngineInfo(
        name="wan-animate-2",
        description="Wan-Animate-2 14B (base or distilled): the reference character moved by a driving video that "
                    "Blender renders from the rig; needs the released diffusers folder",
        inputs=(
            EngineInput("driving", "images", "driving", help="the performance rendered through the scene camera, one "
                                                             "frame per output frame"),
            EngineInput("prompt", "text", required=False, help=f"what the video shows (default: {DEFAULT_PROMPT})"),
            EngineInput("negative_prompt", "text", required=False,
                        help="what it should not show (the base model, with guidance)"),
        ),
        device=default_device(), needs_weights=True, gpus=1, gpu_memory_gib=80,
        size_multiple=SIZE_MULTIPLE, window=81,
        settings={
            "weights": {"type": "path", "default": None,
                        "help": "the Wan2.2-Animate-2-14B-Diffusers folder, or the distilled release's "
                                "(modular_model_index.json and its subfolders): base or distilled is read from it"},
            "seed": {"type": "int", "default": 42, "help": "noise seed; same seed and inputs, same frames"},
            "steps": {"type": "int", "default": 0, "min": 0, "max": 200,
                      "help": "denoising steps (0: the release's, 40 base, 10 distilled)"},
            "guidance": {"type": "float", "default": 0.0, "min": 0.0, "max": 30.0,
                         "help": "classifier-free guidance scale of the base model (0: its 3.0); the distilled "
                                 "model has none (1.0)"},
            "segment": {"type": "int", "default": 81, "min": 5, "max": 201,
                        "help": "frames per segment, 1 more than a multiple of 4; longer shots continue segment "
                                "by segment"},
            "carry": {"type": "int", "default": 1, "choices": list(CARRY_CHOICES),
                      "help": "frames of a segment that condition the next (1 or 5)"},
            "color_match": {"type": "choice", "default": "off", "choices": list(COLOR_MODES),
                            "help": "match each segment's colours against drift: to the first segment's, or to the "
                                    "reference image's (off: the pipeline's frames as they are)"},
            "compile": {"type": "choice", "default": "auto", "choices": ["auto", "on", "off"],
                        "help": "compile the transformer's repeated blocks (auto: on CUDA, where its flex attention "
                                "needs it)"},
            **PLACEMENT_SETTINGS,
            **DEVICE_SETTINGS,
            "dtype": {"type": "str", "default": None,
                      "help": "bfloat16 (default on CUDA), float16 or float32; the VAE stays float32"},
        })

    def check_weights(self, folder: str) -> str:
        return f"{check_weights_folder(folder)} model"

    def check(self, job: JobInputs) -> None:
        """EngineError naming what makes the job impossible, found without loading a model: the weights
        folder (and so the variant), the driving track, the segment plan, the guidance the variant takes,
        the device."""
        settings = job.settings
        if not settings.get("weights"):
            raise EngineError("the wan-animate-2 engine needs 'weights': the Wan2.2-Animate-2-14B-Diffusers folder "
                              "(or the distilled release's) on the backend's machine")
        driving = job.tracks.get("driving", ())
        if len(driving) != len(job.frames):
            raise EngineError(f"the wan-animate-2 engine is driven by a video of the performance; the job has "
                              f"{len(driving)} driving frames for {len(job.frames)} frames")
        check_plan(int(settings["segment"]), int(settings["carry"]))
        variant = check_naming_fetch("wan-animate-2", settings["weights"], check_weights_folder)
        self._sampling(variant, settings)
        device, _dtype = device_and_dtype(settings, cuda_default=None)
        check_placement(*placement_of(settings), device, WanAnimate2Error)

    @staticmethod
    def _sampling(variant: str, settings: dict) -> tuple[int, float]:
        """(steps, guidance) for the variant: the release's where the settings say 0."""
        steps = int(settings.get("steps") or DEFAULT_STEPS[variant])
        guidance = float(settings.get("guidance") or DEFAULT_GUIDANCE[variant])
        if variant == "distilled" and guidance != 1.0:
            raise EngineError(f"the weights are the distilled Wan-Animate-2, which samples without guidance; leave "
                              f"guidance at 0 (its 1.0), not {guidance:g}")
        return steps, guidance

    def pipeline(self, weights: str, device: str, dtype, placement: tuple[str, str], compile_blocks: bool):
        offload, transformer_weights = placement
        key = ("wan-animate-2", str(Path(weights).resolve()), device, dtype, placement, compile_blocks)
        return ENGINE_MODELS.get(key, lambda: load_pipeline(weights, device, dtype, offload, compile_blocks,
                                                            transformer_weights))

    def render(self, job: JobInputs, start: int, stop: threading.Event) -> Iterator[tuple]:
        self.check(job)
        settings = job.settings
        variant = check_weights_folder(settings["weights"])
        steps, guidance = self._sampling(variant, settings)
        device, dtype = device_and_dtype(settings, cuda_default=None)  # None: the loader's bfloat16
        compile_blocks = settings.get("compile", "auto") == "on" or \
            settings.get("compile", "auto") == "auto" and torch.device(device).type == "cuda"
        pipe = self.pipeline(settings["weights"], device, dtype, placement_of(settings), compile_blocks)
        set_guidance(pipe, variant, guidance)
        color = None if settings.get("color_match", "off") == "off" else \
            ColorMatch(settings["color_match"], job.reference[..., :3])
        segments = generate_segments(
            pipe, job.reference, job.tracks["driving"], height=job.height, width=job.width,
            prompt=job.text.get("prompt") or DEFAULT_PROMPT, negative_prompt=job.text.get("negative_prompt") or None,
            segment=int(settings["segment"]), carry=int(settings["carry"]), steps=steps, seed=int(settings["seed"]),
            start_frame=start, state_dir=job.state_dir, stop=stop, color=color)
        for segment in segments:
            for offset, frame in enumerate(segment.frames):
                index = segment.first_frame + offset
                if index >= start:
                    yield index, frame
