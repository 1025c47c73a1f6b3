"""The `animate-anyone` engine (Moore-AnimateAnyone's released weights on diffusers parts) and the
`aniportrait` engine (the same machine with AniPortrait's pose guider, driven by face maps)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from ...fetching import check_naming_fetch
from ...models.devices import DEVICE_SETTINGS, default_device, device_and_dtype
from ..base import ENGINE_MODELS, EngineError, EngineInfo, EngineInput, JobInputs
from .pipeline import AnimateAnyonePipeline
from .weights import check_folder, load_networks

SIZE_MULTIPLE = 8


class AnimateAnyoneEngine:
    info = EngineInfo(
        name="animate-anyone",
        description="Moore-AnimateAnyone (ReferenceNet, pose guider, AnimateDiff motion modules); "
                    "needs the released weights",
        inputs=(EngineInput("pose", "images", "dwpose", help="DWPose-style pose maps, one per frame"),),
        device=default_device(), needs_weights=True, gpus=1, gpu_memory_gib=16,
        size_multiple=SIZE_MULTIPLE, window=24,
        settings={
            "weights": {"type": "path", "default": None, "help": "folder laid out like pretrained_weights/"},
            "seed": {"type": "int", "default": 42, "help": "noise seed; same seed, same frames"},
            "steps": {"type": "int", "default": 25, "min": 1, "max": 200, "help": "DDIM steps"},
            "guidance": {"type": "float", "default": 3.5, "min": 0.0, "max": 30.0,
                         "help": "classifier-free guidance scale"},
            "window": {"type": "int", "default": 24, "min": 1, "max": 32, "help": "frames per window"},
            "overlap": {"type": "int", "default": 4, "min": 0, "help": "frames shared by neighbouring windows"},
            **DEVICE_SETTINGS,
        })

    guider = "animate-anyone"  # whose pose guider the weights folder holds (and so how it is fed)

    def check_weights(self, folder: str) -> None:
        check_folder(folder)

    def check(self, job: JobInputs) -> None:
        settings = job.settings
        name, track = self.info.name, self.info.inputs[0]
        if not settings.get("weights"):
            raise EngineError(f"the {name} engine needs 'weights': the folder with the released "
                              "checkpoints (laid out like pretrained_weights/) on the backend's machine")
        maps = job.tracks.get(track.name, ())
        if len(maps) != len(job.frames):
            raise EngineError(f"the {name} engine draws from control maps ({track.style} style); the job has "
                              f"{len(maps)} '{track.name}' maps for {len(job.frames)} frames")
        if job.width % SIZE_MULTIPLE or job.height % SIZE_MULTIPLE:
            raise EngineError(f"width and height must be multiples of {SIZE_MULTIPLE}, not {job.width}x{job.height}")
        if settings["overlap"] >= settings["window"]:
            raise EngineError(f"overlap ({settings['overlap']}) must be smaller than window ({settings['window']})")
        device_and_dtype(settings)
        check_naming_fetch(name, settings["weights"], check_folder)

    def pipeline(self, weights: str, device: str, dtype) -> AnimateAnyonePipeline:
        key = (self.guider, str(Path(weights).resolve()), device, dtype)
        return ENGINE_MODELS.get(key, lambda: AnimateAnyonePipeline(load_networks(weights, self.guider), device,
                                                                    dtype, guider=self.guider))

    def render(self, job: JobInputs, start: int, stop: threading.Event) -> Iterator[tuple[int, np.ndarray]]:
        self.check(job)
        settings = job.settings
        device, dtype = device_and_dtype(settings)
        pipeline = self.pipeline(settings["weights"], device, dtype)
        frames = pipeline(job.reference, job.tracks[self.info.inputs[0].name], job.width, job.height,
                          steps=int(settings["steps"]), guidance=float(settings["guidance"]),
                          seed=int(settings["seed"]), window=int(settings["window"]),
                          overlap=int(settings["overlap"]), stop=stop)
        for index, image in frames:
            if index >= start:  # a resumed job recomputes (same seed, same frames) and skips what exists
                yield index, image


class AniPortraitEngine(AnimateAnyoneEngine):
    """AniPortrait: the same networks and loop, its own pose guider (fed as its released inference
    feeds it), driven by face-landmark maps. Windows of 16 frames, as that inference uses: the guider's
    features depend on the frames that share a window."""

    info = EngineInfo(
        name="aniportrait",
        description="AniPortrait (face landmarks to portrait video); needs the released weights",
        inputs=(EngineInput("face", "images", "aniportrait-face", help="AniPortrait face-landmark maps, one per "
                                                                       "frame"),),
        device=default_device(), needs_weights=True, gpus=1, gpu_memory_gib=16,
        size_multiple=SIZE_MULTIPLE, window=16,
        settings={**AnimateAnyoneEngine.info.settings,
                  "window": {"type": "int", "default": 16, "min": 1, "max": 32, "help": "frames per window"}})
    guider = "aniportrait"
