"""The `echomimic` engine: EchoMimic v1 talking and singing portraits from the job's sound.

Audio mode: the face region (from the face landmarks of the reference pose, or a box given in the
settings) is the only visual control; the sound drives lips, expression and head. Pose mode: the
face rig's `echomimic-face` landmark maps (eyes, brows, pupils, nose; no mouth) drive the head and
eyes, the sound the lips.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from ...fetching import check_naming_fetch
from ...models.devices import DEVICE_SETTINGS, default_device, device_and_dtype
from ..base import ENGINE_MODELS, EngineError, EngineInfo, EngineInput, JobInputs
from .weights import check_folder, load_networks
from .face_mask import face_box_mask, face_mask_from_landmarks
from .pipeline import DEFAULT_SEED, EchoMimicPipeline

FACE_68 = "face_keypoints_2d"


class EchoMimicEngine:
    info = EngineInfo(
        name="echomimic",
        description="EchoMimic (talking and singing portraits from the sound of the frame range); needs the "
                    "released weights",
        inputs=(
            EngineInput("audio", "audio", help="the scene's sound over the frame range"),
            EngineInput("face", "images", "echomimic-face", required=False, when={"mode": "pose"},
                        help="pose mode: echomimic-style face-landmark maps (eyes, brows, pupils, nose), one per "
                             "frame"),
        ),
        device=default_device(), needs_weights=True, gpus=1, gpu_memory_gib=16,
        size_multiple=8, window=12,
        settings={
            "weights": {"type": "path", "default": None, "help": "folder laid out like EchoMimic's pretrained_weights/"},
            "mode": {"type": "choice", "default": "audio", "choices": ["audio", "pose"],
                     "help": "audio: the sound drives the whole face; pose: the face rig drives head and eyes "
                             "through landmark maps, the sound the lips"},
            "accelerated": {"type": "bool", "default": False,
                            "help": "the accelerated weights (_acc files): 6 steps, no guidance"},
            "seed": {"type": "int", "default": DEFAULT_SEED, "help": "noise seed; same seed, same frames"},
            "steps": {"type": "int", "default": 0, "min": 0, "max": 200,
                      "help": "denoising steps (0: the release's, 30; accelerated 6)"},
            "guidance": {"type": "float", "default": 0.0, "min": 0.0, "max": 30.0,
                         "help": "guidance scale (0: the release's, 2.5; accelerated 1.0, none)"},
            "face_box": {"type": "str", "default": "",
                         "help": "audio mode: x0,y0,x1,y1 in output pixels (default: from the reference pose's "
                                 "face landmarks)"},
            **DEVICE_SETTINGS,
            "dtype": {"type": "str", "default": None, "help": "float16 (default on CUDA), bfloat16 or float32"},
        })

    def check_weights(self, folder: str) -> str:
        """Which of the release's four variants the folder holds whole; EngineError when none."""
        usable, errors = [], []
        for mode in ("audio", "pose"):
            for accelerated in (False, True):
                try:
                    check_folder(folder, mode, accelerated)
                    usable.append(f"{mode}{' accelerated' if accelerated else ''}")
                except EngineError as error:
                    errors.append(error)
        if not usable:
            raise errors[0]
        return "variants: " + ", ".join(usable)

    def pipeline(self, weights: str, mode: str, accelerated: bool, device: str, dtype) -> EchoMimicPipeline:
        key = ("echomimic", str(Path(weights).resolve()), mode, accelerated, device, dtype)
        return ENGINE_MODELS.get(key, lambda: EchoMimicPipeline(load_networks(weights, mode, accelerated), device,
                                                                dtype))

    def check(self, job: JobInputs) -> None:
        """EngineError naming what makes the job impossible, found without loading anything, so the
        server refuses it before it is stored: the sound, what its mode draws the face from, the
        settings, the variant's files in the weights folder."""
        settings = job.settings
        if not settings.get("weights"):
            raise EngineError("the echomimic engine needs 'weights': the folder laid out like EchoMimic's "
                              "pretrained_weights/ on the backend's machine")
        if job.audio is None:
            raise EngineError("the echomimic engine needs the sound of the frame range (add sound strips to the "
                              "scene, or give --audio)")
        mode = settings.get("mode") or "audio"
        if mode == "pose":
            maps = job.tracks.get("face")
            if maps is None or len(maps) != len(job.frames):
                raise EngineError("pose mode draws from echomimic-face landmark maps: bind a face to the character "
                                  "(Marionette > Face), or give --maps")
        else:
            self._face_mask(job, settings.get("face_box") or "")
        device_and_dtype(settings)
        check_naming_fetch(self.info.name, settings["weights"], check_folder, mode, bool(settings.get("accelerated")))

    def render(self, job: JobInputs, start: int, stop: threading.Event) -> Iterator[tuple[int, np.ndarray]]:
        self.check(job)
        settings = job.settings
        mode = settings.get("mode") or "audio"
        frames = len(job.frames)
        face_mask = pose_maps = None
        if mode == "pose":
            pose_maps = job.tracks["face"]
        else:
            face_mask = self._face_mask(job, settings.get("face_box") or "")
        device, dtype = device_and_dtype(settings)
        pipeline = self.pipeline(settings["weights"], mode, bool(settings.get("accelerated")), device, dtype)
        features = pipeline.audio_features(job.audio, job.fps, frames)
        for index, image in pipeline(job.reference, features, job.width, job.height, face_mask=face_mask,
                                     pose_maps=pose_maps, steps=settings.get("steps") or None,
                                     guidance=settings.get("guidance") or None, seed=int(settings["seed"]),
                                     stop=stop):
            if index >= start:  # every frame is final only after the last step: a resumed job recomputes
                yield index, image

    @staticmethod
    def _face_mask(job: JobInputs, face_box: str) -> np.ndarray:
        if face_box:
            try:
                box = tuple(float(v) for v in face_box.split(","))
                if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
                    raise ValueError
            except ValueError:
                raise EngineError(f"face_box must be x0,y0,x1,y1 with x0 < x1 and y0 < y1, not {face_box!r}") from None
            return face_box_mask(job.width, job.height, box)
        for person in job.reference_people:
            points = person.points.get(FACE_68)
            if points is not None and (points[:, 2] > 0).sum() >= 10:
                return face_mask_from_landmarks(points, job.width, job.height)
        raise EngineError("audio mode needs the face's place in the reference: bind a face to the character "
                          "(Marionette > Face) and pose it over the reference, or give face_box x0,y0,x1,y1 "
                          "(--face-box on the command line)")
