"""The `wan-vace` engine: Wan2.1-VACE (1.3B or 14B) making the reference character perform the rig's
motion in the scene the prompt describes. The motion comes as control maps: the rig's pose drawn as
VACE's pose annotator drew it, or the scene's depth rendered by Blender (normalised inverse depth, as
VACE's depth annotator made it).

Frames stream out clip by clip as each is decoded; a resumed job carries on from its first missing
frame with the state kept in the job's folder (pipeline.py).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

from ...fetching import check_naming_fetch
from ...models.devices import DEVICE_SETTINGS, default_device, device_and_dtype
from ...models.placement import PLACEMENT_SETTINGS, check_placement, placement_of
from ..base import ENGINE_MODELS, EngineError, EngineInfo, EngineInput, JobInputs
from .pipeline import CARRY_CHOICES, CLIP, NEGATIVE_PROMPT, SIZE_MULTIPLE, check_plan, check_size, generate_clips
from .weights import WanVaceError, check_weights_folder, load_pipeline

CONTROLS = ("pose", "depth")  # the setting's values, each the name of the track that carries the motion
MODES = ("scene", "plate")
# As VACE's authors run it (their Gradio demo's defaults): 25 steps, guidance 5, context scale 1.
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 5.0


class WanVaceEngine:
    info = EngineInfo(
        name="wan-vace",
        description="Wan2.1-VACE (1.3B or 14B): the reference character performing the rig's motion in the scene "
                    "the prompt describes, driven by the rig's pose or the scene's depth; needs the released "
                    "diffusers folder",
        inputs=(
            EngineInput("pose", "images", "vace-pose", required=False, when={"control": "pose"},
                        help="the rig's pose as VACE's pose annotator drew it (body and face), one map per frame"),
            EngineInput("depth", "images", "depth", required=False, when={"control": "depth"},
                        help="the scene's depth through the camera (near bright), one map per frame"),
            EngineInput("background", "images", "background", required=False, when={"mode": "plate"},
                        help="the plate the character is generated into (a rendered set or live action)"),
            EngineInput("mask", "images", "rig-mask", required=False, when={"mode": "plate"},
                        help="where the character is generated (white), the plate kept elsewhere"),
            EngineInput("prompt", "text", help="the scene and look the video shows, e.g. 'she dances on a rainy "
                                               "neon street at night'"),
            EngineInput("negative_prompt", "text", required=False,
                        help="what it should not show (default: Wan's own negative prompt)"),
        ),
        device=default_device(), needs_weights=True, gpus=1, gpu_memory_gib=24,
        size_multiple=SIZE_MULTIPLE, window=CLIP,
        settings={
            "weights": {"type": "path", "default": None,
                        "help": "the Wan2.1-VACE-1.3B-diffusers or -14B-diffusers folder (model_index.json and its "
                                "subfolders)"},
            "control": {"type": "choice", "default": "pose", "choices": list(CONTROLS),
                        "help": "what carries the motion: the rig's pose maps, or the scene's depth rendered by "
                                "Blender (the set and props shape the scene)"},
            "mode": {"type": "choice", "default": "scene", "choices": list(MODES),
                     "help": "scene: the whole picture made from the prompt; plate: the character generated into "
                             "the background strip inside the rig's mask, the plate kept elsewhere"},
            "seed": {"type": "int", "default": 42, "help": "noise seed; same seed and inputs, same frames"},
            "steps": {"type": "int", "default": DEFAULT_STEPS, "min": 1, "max": 200, "help": "denoising steps"},
            "guidance": {"type": "float", "default": DEFAULT_GUIDANCE, "min": 1.0, "max": 30.0,
                         "help": "classifier-free guidance scale (1: none)"},
            "conditioning_scale": {"type": "float", "default": 1.0, "min": 0.0, "max": 2.0,
                                   "help": "how strongly the control maps steer (VACE's context scale)"},
            "clip": {"type": "int", "default": CLIP, "min": 5, "max": 201,
                     "help": "frames per clip, 1 more than a multiple of 4; longer shots continue clip by clip"},
            "carry": {"type": "int", "default": 5, "choices": list(CARRY_CHOICES),
                      "help": "frames of a clip kept as the start of the next (1 or 5)"},
            **PLACEMENT_SETTINGS,
            **DEVICE_SETTINGS,
            "dtype": {"type": "str", "default": None,
                      "help": "bfloat16 (default on CUDA), float16 or float32; the VAE stays float32"},
        })

    def check_weights(self, folder: str) -> str:
        return f"{check_weights_folder(folder)} model"

    def check(self, job: JobInputs) -> None:
        """EngineError naming what makes the job impossible, found without loading a model: the weights
        folder, the control track, the prompt, the clip plan, the frame size, the device."""
        settings = job.settings
        if not settings.get("weights"):
            raise EngineError("the wan-vace engine needs 'weights': the Wan2.1-VACE-1.3B-diffusers (or -14B) folder "
                              "on the backend's machine")
        control = settings["control"]
        maps = job.tracks.get(control, ())
        if len(maps) != len(job.frames):
            raise EngineError(f"the wan-vace engine with control '{control}' takes one '{control}' map per frame; the "
                              f"job has {len(maps)} for {len(job.frames)} frames")
        if settings.get("mode") == "plate":
            for name, what in (("background", "background plate"), ("mask", "rig mask")):
                if len(job.tracks.get(name, ())) != len(job.frames):
                    raise EngineError(f"the wan-vace engine in plate mode takes one {what} ('{name}') per frame; "
                                      f"the job has {len(job.tracks.get(name, ()))} for {len(job.frames)} frames")
        if not (job.text.get("prompt") or "").strip():
            raise EngineError("the wan-vace engine needs a 'prompt': the scene and look the video shows")
        check_plan(int(settings["clip"]), int(settings["carry"]))
        check_size(job.width, job.height)
        check_naming_fetch("wan-vace", settings["weights"], check_weights_folder)
        device, _dtype = device_and_dtype(settings, cuda_default=None)
        check_placement(*placement_of(settings), device, WanVaceError)

    def pipeline(self, weights: str, device: str, dtype, placement: tuple[str, str]):
        key = ("wan-vace", str(Path(weights).resolve()), device, dtype, placement)
        return ENGINE_MODELS.get(key, lambda: load_pipeline(weights, device, dtype, *placement))

    def render(self, job: JobInputs, start: int, stop: threading.Event) -> Iterator[tuple]:
        self.check(job)
        settings = job.settings
        device, dtype = device_and_dtype(settings, cuda_default=None)  # None: the loader's bfloat16
        pipe = self.pipeline(settings["weights"], device, dtype, placement_of(settings))
        clips = generate_clips(
            pipe, job.reference, job.tracks[settings["control"]], height=job.height, width=job.width,
            prompt=job.text["prompt"], negative_prompt=job.text.get("negative_prompt") or NEGATIVE_PROMPT,
            clip=int(settings["clip"]), carry=int(settings["carry"]), steps=int(settings["steps"]),
            guidance=float(settings["guidance"]), conditioning_scale=float(settings["conditioning_scale"]),
            seed=int(settings["seed"]), start_frame=start, state_dir=job.state_dir, stop=stop,
            **({"background": job.tracks["background"], "mask": job.tracks["mask"]}
               if settings.get("mode") == "plate" else {}))
        for clip in clips:
            for offset, frame in enumerate(clip.frames):
                index = clip.first_frame + offset
                if index >= start:
                    yield index, frame
