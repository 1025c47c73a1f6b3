"""The `animate-anyone` engine: Moore-AnimateAnyone's released weights on diffusers parts."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..base import EngineError, EngineInfo, EngineInput, JobInputs
from ..devices import default_device, device_and_dtype
from .checkpoints import load_networks
from .pipeline import AnimateAnyonePipeline



class AnimateAnyoneEngine:
    info = EngineInfo(
        name="animate-anyone",
        description="Moore-AnimateAnyone (ReferenceNet, pose guider, AnimateDiff motion modules); "
                    "needs the released weights",
        inputs=(EngineInput("pose", "images", "dwpose", help="DWPose-style pose maps, one per frame"),),
        device=default_device(), needs_weights=True, size_multiple=8, window=24,
        settings={
            "weights": {"type": "path", "default": None, "help": "folder laid out like pretrained_weights/"},
            "seed": {"type": "int", "default": 42, "help": "noise seed; same seed, same frames"},
            "steps": {"type": "int", "default": 25, "help": "DDIM steps"},
            "guidance": {"type": "float", "default": 3.5, "help": "classifier-free guidance scale"},
            "window": {"type": "int", "default": 24, "help": "frames per window"},
            "overlap": {"type": "int", "default": 4, "help": "frames shared by neighbouring windows"},
            "device": {"type": "str", "default": None, "help": "cuda or cpu (default: cuda when present)"},
            "dtype": {"type": "str", "default": None, "help": "float16, bfloat16 or float32"},
        })

    guider = "animate-anyone"  # whose pose guider the weights folder holds (and so how it is fed)

    def __init__(self):
        self._loaded: dict[tuple, AnimateAnyonePipeline] = {}  # a loaded model serves the next job too

    def pipeline(self, weights: str, device: str, dtype: torch.dtype) -> AnimateAnyonePipeline:
        key = (str(Path(weights).resolve()), device, dtype)
        if key not in self._loaded:
            self._loaded.clear()  # one model in memory at a time
            self._loaded[key] = AnimateAnyonePipeline(load_networks(weights, self.guider), device, dtype,
                                                      guider=self.guider)
        return self._loaded[key]

    def render(self, job: JobInputs, start: int, stop: threading.Event) -> Iterator[tuple[int, np.ndarray]]:
        settings = job.settings
        name, track = self.info.name, self.info.inputs[0]
        maps = job.tracks.get(track.name, ())
        if not settings.get("weights"):
            raise EngineError(f"the {name} engine needs 'weights': the folder with the released "
                              "checkpoints (laid out like pretrained_weights/) on the backend's machine")
        if len(maps) != len(job.frames):
            raise EngineError(f"the {name} engine draws from control maps ({track.style} style); the job has "
                              f"{len(maps)} '{track.name}' maps for {len(job.frames)} frames")
        if job.width % 8 or job.height % 8:
            raise EngineError(f"width and height must be multiples of 8, not {job.width}x{job.height}")
        device, dtype = device_and_dtype(settings)
        pipeline = self.pipeline(settings["weights"], device, dtype)
        defaults = {name: spec["default"] for name, spec in self.info.settings.items()}
        frames = pipeline(job.reference, maps, job.width, job.height,
                          steps=int(settings.get("steps", defaults["steps"])),
                          guidance=float(settings.get("guidance", defaults["guidance"])),
                          seed=int(settings.get("seed", defaults["seed"])),
                          window=int(settings.get("window", defaults["window"])),
                          overlap=int(settings.get("overlap", defaults["overlap"])), stop=stop)
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
        device=default_device(), needs_weights=True, size_multiple=8, window=16,
        settings={**AnimateAnyoneEngine.info.settings,
                  "window": {"type": "int", "default": 16, "help": "frames per window"}})
    guider = "aniportrait"
