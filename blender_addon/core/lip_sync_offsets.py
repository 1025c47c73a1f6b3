"""Lip-sync offsets, the one format both sides use: per-frame offsets of the 468 canonical face
landmarks (the backend's audio2mesh output), as the backend's answer, as a file of
`marionette lip-sync`, and at any frame rate.

Array: (frames, 468, 3) metres in Blender axes of MediaPipe's canonical face (+X the subject's
left, -Y out of the face, +Z up); frame i at i / fps seconds.
Wire and JSON file: a header {"format": "marionette-lip-sync", "version": 1, "fps", "frames",
"landmarks", "shape", "dtype": "<f4", "units", "axes", "seconds", "source"} and the array as raw
little-endian float32 (the answer's attachment; base64 in the JSON file under "offsets").
.npz file: arrays `offsets`, `fps` and `seconds`.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "marionette-lip-sync"
VERSION = 1
LANDMARKS = 468  # the landmarks audio2mesh moves (the irises are not in the canonical model)
ATTACHMENT = "offsets.f32"
AXES = "Blender axes of the canonical face: +X the subject's left, -Y out of the face, +Z up"


class OffsetsError(ValueError):
    """Offsets that cannot be read; the message names the source and the cause."""


def frame_count(seconds: float, fps: float) -> int:
    """How many frames at `fps` a sound of `seconds` lasts: ceil(seconds * fps), the original's rule
    (frame i is at i / fps seconds)."""
    return math.ceil(seconds * fps)


def resample_frames(frames: np.ndarray, source_fps: float, target_fps: float, count: int) -> np.ndarray:
    """`count` frames at `target_fps` from frames at `source_fps` (frame i at i / fps seconds), linear
    in time, computed in float64 and returned in the frames' dtype; past the last source frame, the
    last frame is held."""
    frames = np.asarray(frames)
    if count <= 0 or not len(frames):
        return frames[:0].copy()
    position = np.minimum(np.arange(count, dtype=np.float64) * (source_fps / target_fps), len(frames) - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, len(frames) - 1)
    fraction = (position - low).reshape((-1,) + (1,) * (frames.ndim - 1))
    wide = frames.astype(np.float64, copy=False)
    return (wide[low] * (1.0 - fraction) + wide[high] * fraction).astype(frames.dtype, copy=False)


@dataclass
class Offsets:
    """(frames, 468, 3) landmark offsets, metres, canonical Blender axes; frame i at i / fps s."""
    offsets: np.ndarray
    fps: float
    seconds: float | None = None  # how long the sound lasts, where known

    def frame_count(self, rate: float) -> int:
        """How many frames at `rate` the offsets cover (ceil(seconds * rate), as the backend counts)."""
        if abs(rate - self.fps) < 1e-9:
            return len(self.offsets)
        seconds = self.seconds if self.seconds is not None else len(self.offsets) / self.fps
        return max(1, frame_count(seconds, rate))

    def at_rate(self, rate: float) -> np.ndarray:
        """The offsets at `rate` frames per second (linear in time)."""
        if abs(rate - self.fps) < 1e-9:
            return self.offsets
        return resample_frames(self.offsets, self.fps, rate, self.frame_count(rate))


def header(offsets: np.ndarray, fps: float, seconds: float) -> dict:
    """What describes an offsets array, in the file and in the backend's answer alike."""
    return {"format": FORMAT, "version": VERSION, "fps": float(fps), "frames": int(len(offsets)),
            "landmarks": LANDMARKS, "shape": [int(n) for n in np.shape(offsets)], "dtype": "<f4",
            "units": "metres", "axes": AXES, "seconds": float(seconds), "source": "AniPortrait audio2mesh"}


def to_bytes(offsets: np.ndarray) -> bytes:
    return np.ascontiguousarray(offsets, dtype="<f4").tobytes()


def _checked(offsets: np.ndarray, fps, seconds, source: str) -> Offsets:
    if offsets.ndim != 3 or offsets.shape[1:] != (LANDMARKS, 3) or not len(offsets):
        raise OffsetsError(f"{source}: offsets of shape {offsets.shape}; expected (frames, {LANDMARKS}, 3)")
    if not np.isfinite(offsets).all():
        raise OffsetsError(f"{source}: the offsets hold values that are not numbers")
    try:
        fps = float(fps)
        seconds = None if seconds is None else float(seconds)
    except (TypeError, ValueError):
        raise OffsetsError(f"{source}: 'fps' and 'seconds' must be numbers") from None
    if not (math.isfinite(fps) and fps > 0):
        raise OffsetsError(f"{source}: fps {fps} is not a frame rate")
    return Offsets(offsets.astype(np.float64), fps, seconds if seconds and seconds > 0 else None)


def from_header(described: dict, data: bytes, source: str) -> Offsets:
    """The offsets a header and its raw float32 data describe."""
    if described.get("format") != FORMAT:
        raise OffsetsError(f"{source} is not lip-sync offsets (written by `marionette lip-sync`)")
    shape = described.get("shape")
    if described.get("dtype") != "<f4" or not isinstance(shape, list) or len(shape) != 3 or \
            not all(type(n) is int and n >= 0 for n in shape):
        raise OffsetsError(f"{source}: unknown offsets layout (dtype {described.get('dtype')!r}, shape {shape!r})")
    if len(data) != 4 * shape[0] * shape[1] * shape[2]:
        raise OffsetsError(f"{source}: {len(data)} bytes of offsets for shape {shape}; the data is cut short")
    offsets = np.frombuffer(data, dtype="<f4").reshape(shape)
    return _checked(offsets, described.get("fps"), described.get("seconds"), source)


def from_answer(answer: dict, data: bytes) -> Offsets:
    """The offsets in the backend's answer to a `lip_sync` request (header and its attachment)."""
    return from_header(answer, data, "the backend's lip-sync answer")


def read_file(path: Path | str) -> Offsets:
    """The offsets `marionette lip-sync` wrote: JSON (base64 float32) or .npz (offsets, fps)."""
    path = Path(path)
    if not path.is_file():
        raise OffsetsError(f"no offsets file at {path}; write one with `marionette lip-sync --out {path.name}`")
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                offsets = np.array(archive["offsets"], dtype=np.float64)
                fps = float(archive["fps"])
                seconds = float(archive["seconds"]) if "seconds" in archive.files else None
        except (OSError, ValueError, KeyError) as error:
            raise OffsetsError(f"cannot read {path} as lip-sync offsets: {error}") from None
        return _checked(offsets, fps, seconds, str(path))
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        data = base64.b64decode(document["offsets"], validate=True)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise OffsetsError(f"cannot read {path} as lip-sync offsets: {error}") from None
    if not isinstance(document, dict):
        raise OffsetsError(f"{path} is not lip-sync offsets (written by `marionette lip-sync`)")
    return from_header(document, data, str(path))


def write_file(path: Path | str, offsets: np.ndarray, fps: float, seconds: float) -> None:
    """Write offsets for Blender's Lip Sync (its Offsets File), whole or not at all: JSON with the
    array as base64 little-endian float32, or .npz with `offsets`, `fps` and `seconds`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".part")
    if path.suffix.lower() == ".npz":
        with open(temporary, "wb") as handle:
            np.savez(handle, offsets=np.asarray(offsets, dtype="<f4"), fps=np.float64(fps),
                     seconds=np.float64(seconds))
    else:
        document = header(offsets, fps, seconds)
        document["offsets"] = base64.b64encode(to_bytes(offsets)).decode("ascii")
        temporary.write_text(json.dumps(document))
    temporary.replace(path)
