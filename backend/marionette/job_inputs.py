"""A job's inputs: checked by the one validator the server and the command line share, then built
into what engines read.

    validate_job(...)    the request against the engine's declaration and the limits -> the job's spec
    prepare_inputs(...)  the inputs decoded and scaled to the output size, and the engine's own check
    build_inputs(...)    the decoding itself (also how a stored job is read back)

Every check names its cause and, where there is one, the fix, for a client as for a shell user.
Nothing is decoded before every image header has been checked against the limits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marionette_core import openpose_json
from marionette_core.image_header import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE
from marionette_core.keypoints import PersonKeypoints

from .audio import AudioError, load_audio
from .engines.base import Engine, EngineError, EngineInfo, JobInputs
from .images import ImageError, ImageLimitError, ImageTrack, check_image, decode_image, resize_to

TRACK_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


class JobError(ValueError):
    """A job request (or job folder) that cannot be used; the message says why."""


class LimitError(JobError):
    """A job over one of the backend's limits (frames, pixels)."""


@dataclass
class Limits:
    """What one job may ask for; a server announces them in the handshake."""
    max_frames: int = 10_000
    max_side: int = DEFAULT_MAX_SIDE  # pixels, for the output and for every image sent
    max_pixels: int = DEFAULT_MAX_PIXELS  # width x height, likewise

    def to_json(self) -> dict:
        return {"max_frames": self.max_frames, "max_side": self.max_side, "max_pixels": self.max_pixels}


def check_track_name(name) -> str:
    if not isinstance(name, str) or not TRACK_NAME.fullmatch(name):
        raise JobError(f"not a track name: {str(name)[:40]!r} (lowercase letters, digits and _)")
    return name


def check_tracks(info: EngineInfo, tracks: dict, frames: int) -> None:
    """JobError unless the tracks are exactly what the engine declares: every required one, none it
    does not know, one image per frame."""
    declared = {spec.name: spec for spec in info.inputs if spec.kind == "images"}
    unknown = sorted(set(tracks) - set(declared))
    if unknown:
        raise JobError(f"engine '{info.name}' takes no {', '.join(map(repr, unknown))} images; it takes "
                       f"{', '.join(declared) or 'none'}")
    for name, spec in declared.items():
        if name not in tracks:
            if spec.required:
                raise JobError(f"engine '{info.name}' needs the '{name}' track: {spec.help or spec.style} "
                               f"(one image per frame)")
            continue
        if len(tracks[name]) != frames:
            raise JobError(f"{len(tracks[name])} '{name}' images for {frames} frames; send one per frame")


def validate_job(job: dict, info: EngineInfo, tracks: dict[str, Sequence], audio, reference_size: tuple[int, int],
                 limits: Limits) -> dict:
    """The spec of a job (engine, settings with their defaults, width, height, frames, text, fps)
    whose request meets the engine's declaration and the limits; JobError (LimitError for a limit)
    naming the first thing that does not.

    job: the request ({"poses", "frames", "width", "height", "settings", "text", "fps",
    "reference_pose"}); tracks: the image inputs by name, one entry per frame (bytes or files);
    audio: the sound (bytes or a file) or None; reference_size: (width, height) of the reference
    image, the output size unless the job gives one."""
    poses = job.get("poses")
    if not isinstance(poses, list) or not poses:
        raise JobError("the job needs 'poses': one OpenPose JSON object per frame")
    if len(poses) > limits.max_frames:
        raise LimitError(f"{len(poses)} frames is over the limit of {limits.max_frames}")
    frames = job.get("frames")
    if frames is None:
        frames = list(range(len(poses)))
    if not isinstance(frames, list) or len(frames) != len(poses) or not all(type(f) is int for f in frames):
        raise JobError("'frames' must list one integer frame number per pose")
    width, height = job.get("width"), job.get("height")
    for side in (width, height):
        if side is not None and (type(side) is not int or side <= 0):
            raise JobError("'width' and 'height' must be positive integers")
        if side is not None and side > limits.max_side:
            raise LimitError(f"a side of {side} px is over the limit of {limits.max_side}")
    settings = job.get("settings", {})
    if not isinstance(settings, dict):
        raise JobError("'settings' must be an object")
    try:
        settings = info.validate_settings(settings)
    except EngineError as error:
        raise JobError(str(error)) from None
    text = job.get("text", {})
    if not isinstance(text, dict) or not all(isinstance(v, str) for v in text.values()):
        raise JobError("'text' must be an object of strings (prompt, negative_prompt)")
    declared_text = {spec.name for spec in info.inputs if spec.kind == "text"}
    if set(text) - declared_text:
        raise JobError(f"engine '{info.name}' takes no text {', '.join(sorted(set(text) - declared_text))}")
    fps = job.get("fps", 24.0)
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not 0 < fps <= 1000:
        raise JobError("'fps' must be a number of frames per second")
    if not isinstance(job.get("reference_pose"), dict):
        raise JobError("the job needs 'reference_pose': OpenPose JSON of the rig posed over the reference")
    takes_audio = [spec for spec in info.inputs if spec.kind == "audio"]
    if audio is not None and not takes_audio:
        raise JobError(f"engine '{info.name}' takes no sound")
    if audio is None and any(spec.required for spec in takes_audio):
        raise JobError(f"engine '{info.name}' needs the sound of the frame range (the 'audio' attachment; "
                       f"--audio FILE on the command line: frame i is at i / fps seconds)")
    for name in tracks:
        check_track_name(name)
    check_tracks(info, tracks, len(poses))
    spec = {"engine": info.name, "settings": settings, "width": width or reference_size[0],
            "height": height or reference_size[1], "frames": frames, "text": text, "fps": float(fps)}
    if info.size_multiple > 1 and (spec["width"] % info.size_multiple or spec["height"] % info.size_multiple):
        raise LimitError(f"engine '{info.name}' needs width and height in multiples of {info.size_multiple}, "
                         f"not {spec['width']}x{spec['height']}")
    if spec["width"] * spec["height"] > limits.max_pixels:
        raise LimitError(f"an output of {spec['width']}x{spec['height']} pixels is over the limit of "
                         f"{limits.max_pixels} pixels")
    return spec


def check_images(reference: bytes, tracks: dict[str, Sequence], limits: Limits) -> tuple[int, int]:
    """Every image sent as bytes checked from its header (PNG or JPEG, within the limits) before
    anything is decoded; the reference image's (width, height)."""
    try:
        size = check_image(reference, "reference image", limits.max_side, limits.max_pixels)
        for name, images in tracks.items():
            for index, data in enumerate(images):
                if not isinstance(data, Path):  # a file is checked when it is read
                    check_image(data, f"'{name}' image {index}", limits.max_side, limits.max_pixels)
    except ImageLimitError as error:
        raise LimitError(str(error)) from None
    except ImageError as error:
        raise JobError(str(error)) from None
    return size.width, size.height


def prepare_inputs(spec: dict, engine: Engine, reference: bytes, reference_pose: dict, poses: list[dict],
                   tracks: dict[str, Sequence], audio, limits: Limits, state_dir: Path | None = None,
                   engine_check: bool = True) -> JobInputs:
    """The inputs of a validated job as the engine reads them, after its own check (weights files, the
    tracks its mode needs, the device; skipped with engine_check=False, where another machine runs the
    job): decoding the reference, every pose, the first image of each track and the sound proves the
    job readable before it is queued or run."""
    try:
        inputs = build_inputs(reference, reference_pose, poses, tracks, spec["width"], spec["height"],
                              spec["settings"], info=engine.info, text=spec["text"], audio=audio, fps=spec["fps"],
                              state_dir=state_dir, max_side=limits.max_side, max_pixels=limits.max_pixels)
        for track in inputs.tracks.values():
            track[0]  # noqa: B018 -- decodes it: a job with an unreadable track fails now, not mid-run
        check = getattr(engine, "check", None) if engine_check else None  # optional: engines that can tell early
        if check is not None:
            check(inputs)
    except ImageLimitError as error:
        raise LimitError(str(error)) from None
    except (ImageError, AudioError, EngineError) as error:
        raise JobError(str(error)) from None
    return inputs


def people_from_openpose(data: dict, width: int, height: int, what: str) -> list[PersonKeypoints]:
    """People of an OpenPose JSON object, scaled from its canvas to width x height pixels."""
    try:
        people, canvas_width, canvas_height = openpose_json.loads(json.dumps(data))
    except (ValueError, TypeError) as error:
        raise JobError(f"{what}: {error}") from None
    if canvas_width > 0 and canvas_height > 0 and (canvas_width, canvas_height) != (width, height):
        scale = np.array([width / canvas_width, height / canvas_height, 1.0])
        for person in people:
            for key in person.points:
                person.points[key] = person.points[key] * scale
    return people


def build_inputs(reference_png: bytes, reference_pose: dict, poses: list[dict],
                 tracks: dict[str, Sequence[bytes | Path]], width: int | None, height: int | None, settings: dict,
                 info: EngineInfo | None = None, text: dict | None = None, audio: bytes | Path | None = None,
                 fps: float = 24.0, state_dir: Path | None = None, max_side: int = DEFAULT_MAX_SIDE,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> JobInputs:
    """Decode and scale a job's inputs to the output size (the reference image's, unless given).

    Every image header is checked against the limits before anything is decoded; track images are
    decoded later, one at a time, as the engine reads them (ImageTrack), at the output size or at
    the size the engine declares for that track (face crops: 512x512)."""
    for name, images in tracks.items():
        for index, data in enumerate(images):
            if not isinstance(data, Path):
                check_image(data, f"'{name}' image {index}", max_side, max_pixels)
    reference = decode_image(reference_png, "reference image", max_side, max_pixels)
    width = int(width or reference.shape[1])
    height = int(height or reference.shape[0])
    reference = resize_to(reference, width, height)
    reference_people = people_from_openpose(reference_pose, width, height, "reference keypoints")
    frames = [people_from_openpose(pose, width, height, f"keypoints of frame {i}") for i, pose in enumerate(poses)]
    track_images = {}
    for name, images in tracks.items():
        spec = info.track(name) if info is not None else None
        size = spec.size if spec is not None and spec.size else (width, height)
        track_images[name] = ImageTrack(images, *size, f"'{name}' image", max_side, max_pixels)
    samples = load_audio(audio) if audio is not None else None
    return JobInputs(reference, reference_people, frames, track_images, dict(text or {}), dict(settings),
                     state_dir, samples, float(fps))
