"""The `wan-animate` engine: Wan2.2-Animate-14B (diffusers' WanAnimatePipeline) driven by the rig.

Inputs: `wan`-style pose maps; face crops (sent by the client, or made here from the reference face
warped to each frame's face landmarks); in replace mode a background plate and a mask (white =
generate); a prompt. Frames stream out segment by segment as each is decoded; a resumed job carries
on from the first missing frame with the carry state kept in the job's folder.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ...models.devices import DEVICE_SETTINGS, default_device, device_and_dtype
from ...models.placement import PLACEMENT_SETTINGS, check_placement, placement_of
from ..base import ENGINE_MODELS, EngineError, EngineInfo, EngineInput, JobInputs
from .face_crops import face_crops
from .pipeline import CARRY_CHOICES, DEFAULT_PROMPT, MODES, SIZE_MULTIPLE, generate_segments, plan_segments
from ...fetching import check_naming_fetch
from .weights import WanAnimateError, check_weights_folder, load_pipeline


class WanAnimateEngine:
    info = EngineInfo(
        name="wan-animate",
        description="Wan2.2-Animate-14B (whole body and face from the rig, prompts, replace mode into a "
                    "plate); needs the released diffusers folder",
        inputs=(
            EngineInput("pose", "images", "wan", help="Wan-style pose maps, one per frame"),
            EngineInput("face_crops", "images", "face-crop", required=False, size=(512, 512),
                        help="512x512 face crops that carry the expression; made from the reference face "
                             "and the rig's face landmarks when not sent"),
            EngineInput("background", "images", "background", required=False, when={"mode": "replace"},
                        help="replace mode: the plate the character is generated into"),
            EngineInput("mask", "images", "rig-mask", required=False, when={"mode": "replace"},
                        help="replace mode: white where the character is generated"),
            EngineInput("prompt", "text", required=False, help=f"what the video shows (default: {DEFAULT_PROMPT})"),
            EngineInput("negative_prompt", "text", required=False, help="what it should not show (guidance > 1)"),
        ),
        device=default_device(), needs_weights=True, gpus=1, gpu_memory_gib=80,
        size_multiple=SIZE_MULTIPLE, window=77,
        settings={
            "weights": {"type": "path", "default": None,
                        "help": "the Wan2.2-Animate-14B-Diffusers folder (model_index.json and its subfolders)"},
            "mode": {"type": "choice", "default": "animate", "choices": list(MODES),
                     "help": "animate: the character on the reference's background; replace: into the "
                             "background plate, where the mask is white"},
            "seed": {"type": "int", "default": 42, "help": "noise seed; same seed and inputs, same frames"},
            "steps": {"type": "int", "default": 20, "min": 1, "max": 200, "help": "denoising steps"},
            "guidance": {"type": "float", "default": 1.0, "min": 0.0, "max": 30.0,
                         "help": "classifier-free guidance scale (1.0: none, the fastest)"},
            "segment": {"type": "int", "default": 77, "min": 5, "max": 201,
                        "help": "frames per segment (rounded to 4n+1); longer shots continue segment by segment"},
            "carry": {"type": "int", "default": 1, "choices": list(CARRY_CHOICES),
                      "help": "frames of a segment that condition the next (1 or 5)"},
            **PLACEMENT_SETTINGS,
            **DEVICE_SETTINGS,
            "dtype": {"type": "str", "default": None,
                      "help": "bfloat16 (default on CUDA), float16 or float32; the VAE stays float32"},
        })

    def check_weights(self, folder: str) -> None:
        check_weights_folder(folder)

    def pipeline(self, weights: str, device: str, dtype: torch.dtype | None, placement: tuple[str, str]):
        key = ("wan-animate", str(Path(weights).resolve()), device, dtype, placement)
        return ENGINE_MODELS.get(key, lambda: load_pipeline(weights, device, dtype, *placement))

    def check(self, job: JobInputs) -> None:
        """EngineError naming what makes the job impossible, found without loading anything, so the
        server refuses it before it is stored: the weights folder's files, the tracks its mode needs,
        the segment plan, the settings."""
        settings = job.settings
        if not settings.get("weights"):
            raise EngineError("the wan-animate engine needs 'weights': the Wan2.2-Animate-14B-Diffusers folder "
                              "on the backend's machine")
        pose = job.tracks.get("pose", ())
        if len(pose) != len(job.frames):
            raise EngineError(f"the wan-animate engine draws from wan-style pose maps; the job has {len(pose)} "
                              f"for {len(job.frames)} frames")
        background, mask = job.tracks.get("background"), job.tracks.get("mask")
        if (settings.get("mode") or "animate") == "replace" and (background is None or mask is None):
            missing = " and ".join(n for n, t in (("background", background), ("mask", mask)) if t is None)
            raise EngineError(f"replace mode needs a {missing} track: pick a background strip (and let the "
                              f"extension draw the rig mask), or give --background and --mask")
        if "face_crops" not in job.tracks and not job.reference_people:
            raise EngineError("the reference keypoints have no person to make the face crops from; pose the rig "
                              "over the reference, or send the face crops")
        plan_segments(len(job.frames), int(settings["segment"]), int(settings["carry"]))
        device, _dtype = device_and_dtype(settings, cuda_default=None)
        check_placement(*placement_of(settings), device, WanAnimateError)
        check_naming_fetch("wan-animate", settings["weights"], check_weights_folder)

    def render(self, job: JobInputs, start: int, stop: threading.Event) -> Iterator[tuple]:
        self.check(job)
        settings = job.settings
        mode = settings.get("mode") or "animate"
        pose = job.tracks["pose"]
        background, mask = job.tracks.get("background"), job.tracks.get("mask")
        crops = job.tracks.get("face_crops")
        drove_the_face = crops is None  # crops made here go back to the client as their own pass
        if crops is None:
            crops = face_crops(job.reference, job.reference_people[0], [p[0] if p else None for p in job.frames],
                               job.width, job.height)
        device, dtype = device_and_dtype(settings, cuda_default=None)  # None: the loader's bfloat16
        pipe = self.pipeline(settings["weights"], device, dtype, placement_of(settings))
        segments = generate_segments(
            pipe, job.reference, pose, crops, height=job.height, width=job.width,
            background=background if mode == "replace" else None, mask=mask if mode == "replace" else None,
            mode=mode, prompt=job.text.get("prompt") or DEFAULT_PROMPT,
            negative_prompt=job.text.get("negative_prompt", ""), segment_frame_length=int(settings["segment"]),
            carry=int(settings["carry"]), steps=int(settings["steps"]), guidance=float(settings["guidance"]),
            seed=int(settings["seed"]), start_frame=start, state_dir=job.state_dir, stop=stop)
        for segment in segments:
            for offset, frame in enumerate(segment.frames):
                index = segment.first_frame + offset
                if index < start:
                    continue
                if drove_the_face:
                    yield index, frame, {"face_crops": np.asarray(crops[index])}
                else:
                    yield index, frame
