"""Live Link Face (ARKit) CSV import: blendshape columns onto shape keys of the same names, and the
head's yaw, pitch and roll onto a bone, as keyframes at the scene frame rate."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

HEAD_COLUMNS = ("HeadYaw", "HeadPitch", "HeadRoll")
SKIPPED_COLUMNS = {"Timecode", "BlendShapeCount"}


class CaptureError(Exception):
    """A capture file that cannot be imported; the message names the file and the cause."""


@dataclass
class Capture:
    times: list[float]  # seconds from the first row
    shapes: dict[str, list[float]]  # ARKit shape key name (camelCase) -> value per row
    head: dict[str, list[float]]  # HeadYaw/HeadPitch/HeadRoll -> radians per row


def shape_key_name(column: str) -> str:
    """Live Link Face writes 'EyeBlinkLeft'; ARKit and the shape keys say 'eyeBlinkLeft'."""
    return column[:1].lower() + column[1:]


def timecode_seconds(text: str, fps_hint: float) -> float:
    """'HH:MM:SS:FF.fraction' (frames at the capture's rate) to seconds."""
    parts = text.strip().split(":")
    if len(parts) != 4:
        raise ValueError(text)
    hours, minutes, seconds = int(parts[0]), int(parts[1]), int(parts[2])
    frames = float(parts[3])
    return hours * 3600 + minutes * 60 + seconds + frames / fps_hint


def read_capture(path: Path, capture_fps: float = 60.0) -> Capture:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise CaptureError(f"cannot read {path}: {error}") from None
    if not rows or "Timecode" not in rows[0]:
        raise CaptureError(f"{path} is not a Live Link Face CSV (no Timecode column)")
    try:
        stamps = [timecode_seconds(row["Timecode"], capture_fps) for row in rows]
    except ValueError as error:
        raise CaptureError(f"{path}: bad timecode {error}") from None
    start = stamps[0]
    columns = [c for c in rows[0] if c not in SKIPPED_COLUMNS and c]
    shapes, head = {}, {}
    for column in columns:
        try:
            values = [float(row[column]) for row in rows]
        except (TypeError, ValueError):
            raise CaptureError(f"{path}: column {column} holds a value that is not a number") from None
        if column in HEAD_COLUMNS:
            head[column] = values
        elif not column.startswith(("LeftEye", "RightEye")):
            shapes[shape_key_name(column)] = values
    return Capture([t - start for t in stamps], shapes, head)


def apply_capture(capture: Capture, face, head_bone, scene_fps: float, frame_start: int) -> dict:
    """Key the capture onto `face`'s shape keys (and `head_bone`'s rotation, if given) at the
    scene rate. Returns counts of what was keyed; shapes the mesh lacks are listed, not fatal."""
    keys = face.data.shape_keys.key_blocks if face.data.shape_keys else {}
    keyed, missing = 0, []
    for name, values in capture.shapes.items():
        if name not in keys:
            missing.append(name)
            continue
        curve_points = [(frame_start + t * scene_fps, v) for t, v in zip(capture.times, values)]
        for frame, value in curve_points:
            keys[name].value = value
            keys[name].keyframe_insert("value", frame=frame)
        keyed += 1
    if head_bone is not None and capture.head:
        head_bone.rotation_mode = "XYZ"
        yaw, pitch, roll = (capture.head.get(c, [0.0] * len(capture.times)) for c in HEAD_COLUMNS)
        for t, y, p, r in zip(capture.times, yaw, pitch, roll):
            # Bone-local axes of an upright head bone: X across (pitch), Y up the neck (yaw), Z forward (roll).
            head_bone.rotation_euler = (p, y, r)
            head_bone.keyframe_insert("rotation_euler", frame=frame_start + t * scene_fps)
    return {"shapes": keyed, "missing": sorted(missing), "rows": len(capture.times),
            "seconds": capture.times[-1] if capture.times else 0.0}
